"""Sample from a trained run: python -m jaxlm.sample --workdir DIR --prompt "ROMEO:" [...].

A decoder continues the prompt (printed with it); an encoder-decoder (T5) reads the prompt with
its encoder and answers it from the decoder's start token (printed after it)."""

from __future__ import annotations

import logging

from absl import flags

from jaxlm import cli
from jaxlm.errors import UserError

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory written by jaxlm.train.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None,
    'A checkpoints directory (its latest step) or one step directory in it '
    '(default: WORKDIR/checkpoints).')
_PROMPT = flags.DEFINE_multi_string('prompt', ['\n'], 'Prompt text (repeat for a batch).')
_MAX_NEW = flags.DEFINE_integer('max_new_tokens', 100, 'Tokens to generate per prompt.')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.8, '0 = greedy.')
_TOP_K = flags.DEFINE_integer('top_k', 40, '0 = no top-k filtering.')
_TOP_P = flags.DEFINE_float('top_p', 1.0, 'Nucleus sampling mass; 1.0 = no top-p filtering.')
_USE_CACHE = flags.DEFINE_bool('use_cache', True,
                               'KV-cache decoding (--nouse_cache: recompute all tokens per step).')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
_CHAT = flags.DEFINE_bool('chat', False, "Each prompt is a user turn, rendered with the run's "
                          'chat template and its generation prompt; the reply stops at the '
                          'end-of-turn token.')
flags.mark_flag_as_required('workdir')


def main(argv: list[str]) -> None:
    del argv
    for name in ('absl', 'jax._src.xla_bridge'):  # orbax warns that a read-only manager is one
        logging.getLogger(name).setLevel(logging.ERROR)
    from jaxlm.data import chat_format
    from jaxlm.data.chat import Message
    from jaxlm.inference.decode import generate, prompt_tokens
    from jaxlm.inference.load import load_run, read_run_config
    from jaxlm.models import registry

    # before reading any checkpoint
    family = registry.causal_lm(read_run_config(_WORKDIR.value).model)
    if _CHAT.value and family.decoder_start is not None:
        raise UserError('--chat renders a chat template for a decoder; an encoder-decoder run '
                        '(objective seq2seq) reads the plain prompt: leave out --chat')
    run = load_run(_WORKDIR.value, _CHECKPOINT.value)
    model, params, tokenizer, step = run.model, run.params, run.tokenizer, run.step
    prompts = [prompt_tokens(family, tokenizer, p) for p in _PROMPT.value]
    stops = [tokenizer.eos_id]
    if _CHAT.value:
        template = chat_format.run_template(run.config.data)
        prompts = [chat_format.prompt_ids([Message('user', p)], template, tokenizer)
                   for p in _PROMPT.value]
        stops.append(chat_format.end_of_turn_id(tokenizer))
    outs = generate(model, params, prompts, max_new_tokens=_MAX_NEW.value,
                    temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value,
                    seed=_SEED.value, stop_token_ids=stops, use_cache=_USE_CACHE.value)
    print(f'# step {step}, temperature {_TEMPERATURE.value}, top_k {_TOP_K.value}, '
          f'top_p {_TOP_P.value}')
    for prompt, out in zip(_PROMPT.value, outs, strict=True):
        if _CHAT.value:  # the reply alone, and whether it ended its turn
            ended = 'ended its turn' if len(out) < _MAX_NEW.value else 'cut at --max_new_tokens'
            print(f'--- user: {prompt!r}\n--- assistant ({len(out)} tokens, {ended}):\n'
                  f'{tokenizer.decode(out)}')
            continue
        shown = prompt if family.decoder_start is None else ''  # a T5 answers, not continues
        print(f'--- prompt: {prompt!r}\n{shown}{tokenizer.decode(out)}')


if __name__ == '__main__':
    cli.run(main, 'jaxlm.sample')

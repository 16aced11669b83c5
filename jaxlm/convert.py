"""Convert checkpoints between Hugging Face and jaxlm.

    python -m jaxlm.convert --from-hf HF_DIR --workdir OUT      # HF folder -> jaxlm run
    python -m jaxlm.convert --to-hf HF_OUT --workdir RUN        # jaxlm run -> HF folder
    python -m jaxlm.convert --to-peft PEFT_OUT --workdir RUN    # LoRA adapters -> PEFT folder

A LoRA run (`lora.rank` > 0) exports with --to-hf as merged weights (base + adapters), or with
--to-peft as a PEFT adapter over its base (export the base run with --to-hf, then
`peft.PeftModel.from_pretrained(base, PEFT_OUT)`).

HF_DIR is a local folder with config.json, model.safetensors (or shards with
model.safetensors.index.json) and tokenizer.json or tokenizer.model. OUT becomes a jaxlm run:
`jaxlm.sample` / `jaxlm.eval --workdir OUT` use it directly and
`python -m jaxlm.train --config OUT/config.py --workdir OUT` fine-tunes it from step 0.
Supported: GPT2LMHeadModel, LlamaForCausalLM (LLaMA 2 and 3), MistralForCausalLM,
T5ForConditionalGeneration (T5.1.1).

The output folder must be new or empty; --overwrite replaces an existing run (--from-hf) or HF
folder (--to-hf) as a whole, and only once the conversion has succeeded.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='python -m jaxlm.convert', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument('--from-hf', metavar='HF_DIR', help='HF folder to read')
    direction.add_argument('--to-hf', metavar='HF_OUT', help='HF folder to write')
    direction.add_argument('--to-peft', metavar='PEFT_OUT',
                           help="a LoRA run's adapters, as a PEFT adapter folder")
    p.add_argument('--workdir', required=True, help='jaxlm run directory (written / read)')
    p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16', 'float16'),
                   help='--from-hf: model.dtype (compute dtype) of the run')
    p.add_argument('--param-dtype', default='float32', choices=('float32', 'bfloat16'),
                   help='--from-hf: model.param_dtype of the run')
    p.add_argument('--hf-dtype', default=None, choices=('float32', 'bfloat16', 'float16'),
                   help='--to-hf: tensor dtype (default: the original HF dtype, else float32)')
    p.add_argument('--checkpoint', default=None,
                   help='--to-hf, --to-peft: checkpoint dir or step dir')
    p.add_argument('--max-shard-gb', type=float, default=5.0, help='--to-hf: shard size')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing jaxlm run / HF folder (all of its contents)')
    p.add_argument('--verbose', action='store_true', help='on an error, print the traceback')
    args = p.parse_args(argv)

    # orbax warns on every read-only restore, and --to-hf restores once per tensor.
    logging.getLogger('absl').setLevel(logging.ERROR)
    from jaxlm.cli import USER_ERRORS, report
    from jaxlm.interop.hf import from_hf, to_hf
    from jaxlm.interop.peft import to_peft

    t0 = time.perf_counter()
    try:
        if args.from_hf:
            cfg = from_hf(args.from_hf, args.workdir, dtype=args.dtype,
                          param_dtype=args.param_dtype, overwrite=args.overwrite)
            what = f'{args.from_hf} -> jaxlm run {args.workdir} ({cfg.model.num_layers} layers)'
        elif args.to_peft:
            modules = to_peft(args.workdir, args.to_peft, checkpoint=args.checkpoint,
                              overwrite=args.overwrite)
            what = f'adapters of {args.workdir} ({", ".join(modules)}) -> {args.to_peft}'
        else:
            to_hf(args.workdir, args.to_hf, checkpoint=args.checkpoint, dtype=args.hf_dtype,
                  max_shard_bytes=int(args.max_shard_gb * 2**30), overwrite=args.overwrite)
            what = f'jaxlm run {args.workdir} -> {args.to_hf}'
    except USER_ERRORS as e:
        if args.verbose:
            raise
        return report(e, 'python -m jaxlm.convert')
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f'converted {what} in {time.perf_counter() - t0:.1f}s; peak RSS {rss:.2f} GiB')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""A LoRA run's adapters as a PEFT adapter folder (adapter_config.json, adapter_model.safetensors)
that `peft.PeftModel.from_pretrained` loads over the run's base exported with `--to-hf`.

jaxlm keeps A [*layers, in, r] and B [*layers, r, out] over a kernel flattened to [in, out]
(jaxlm/models/lora.py); PEFT keeps lora_A.weight [r, in] and lora_B.weight [out, r] of a
torch Linear whose weight is [out, in], with the same alpha / r scale. Each adapted kernel's HF
tensor is found through the family's HF spec table; the export checks numerically, per kernel,
that the spec maps the kernel-shaped product A @ B to exactly (A @ B)^T, i.e. that the HF
tensor is a plain transposed reshape of the kernel, before writing anything (a fused or
permuted layout, such as GPT-2's c_attn, is refused with a one-line error).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from jaxlm.models import lora as lora_lib
from jaxlm.models.hf_specs import ConversionError, Spec

ADAPTER_MARKERS = ('adapter_config.json', 'adapter_model.safetensors')


def _spec_of(path: tuple[str, ...], specs: list[Spec]) -> Spec:
    for spec in specs:
        if spec.paths == (path,) and spec.per_layer and spec.hf.endswith('.weight'):
            return spec
    raise ConversionError(f'no Hugging Face Linear for the adapted kernel {"/".join(path)}: '
                          'it cannot be written as a PEFT adapter (export merged weights with '
                          '--to-hf instead)')


def _check_plain(spec: Spec, shape: tuple[int, ...], n_in: int, n_out: int) -> None:
    """The spec's HF tensor of a kernel A @ B must be (A @ B)^T."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n_in, 2)), rng.standard_normal((2, n_out))
    (w,) = [np.asarray(spec.to_hf([(a @ b).reshape(shape)]))]
    if w.shape != (n_out, n_in) or not np.allclose(w, (a @ b).T):
        raise ConversionError(f'{spec.hf}: its Hugging Face layout is not a plain transposed '
                              'reshape of the jaxlm kernel, so LoRA factors do not carry over '
                              'to PEFT (export merged weights with --to-hf instead)')


def adapter_tensors(adapters: dict[str, Any], model_cfg: Any, base_specs: Any,
                    lora: lora_lib.LoraConfig) -> tuple[dict[str, np.ndarray], list[str]]:
    """({PEFT tensor name: array}, target module names) of `adapters` (host arrays)."""
    from flax import traverse_util

    from jaxlm.interop.hf import tensor_specs

    specs = tensor_specs(model_cfg)
    layouts = lora_lib.targets(base_specs, lora)
    flat = traverse_util.flatten_dict(adapters)
    tensors, modules = {}, set()
    for path, layout in sorted(layouts.items()):
        spec = _spec_of(path, specs)
        a, b = np.asarray(flat[(*path, 'a')]), np.asarray(flat[(*path, 'b')])
        if layout.stack != 1:
            raise ConversionError(f'{"/".join(path)}: PEFT export needs one layer axis')
        n_in, n_out = a.shape[-2], b.shape[-1]
        _check_plain(spec, _layer_kernel_shape(spec), n_in, n_out)
        module = spec.hf[:-len('.weight')]
        modules.add(module.rsplit('.', 1)[-1])
        for i in range(a.shape[0]):
            name = 'base_model.model.' + module.format(i=i)
            tensors[f'{name}.lora_A.weight'] = np.ascontiguousarray(a[i].T, np.float32)
            tensors[f'{name}.lora_B.weight'] = np.ascontiguousarray(b[i].T, np.float32)
    return tensors, sorted(modules)


def _layer_kernel_shape(spec: Spec) -> tuple[int, ...]:
    """One layer's jaxlm kernel shape, from the spec's HF shape and its inverse map."""
    (w,) = spec.to_jax(np.zeros(spec.hf_shape, np.float32))
    return tuple(w.shape)


def to_peft(workdir: str, out_dir: str, *, checkpoint: str | None = None,
            overwrite: bool = False) -> list[str]:
    """Writes the adapters of the LoRA run in `workdir` (its latest checkpoint, or
    `checkpoint`) to `out_dir`; returns the PEFT target modules."""
    from jaxlm.checkpoints import has_checkpoints, split_checkpoint_path
    from jaxlm.inference import load
    from jaxlm.interop.hf import check_target, staged
    from jaxlm.models import params as param_lib
    from jaxlm.models.registry import build_model

    cfg = load.read_run_config(workdir)
    lora = lora_lib.LoraConfig.from_config(cfg.lora) if 'lora' in cfg else None
    if lora is None:
        raise ConversionError(f'{workdir} is not a LoRA run (lora.rank is 0): export it with '
                              '--to-hf')
    directory, step = split_checkpoint_path(checkpoint or
                                                 os.path.join(workdir, 'checkpoints'))
    if step is None and not has_checkpoints(directory):
        raise ConversionError(f'{workdir} has no adapters to export: no checkpoint in '
                              f'{directory}')
    check_target(out_dir, workdir, 'PEFT adapter', ADAPTER_MARKERS, overwrite)
    model = build_model(cfg)
    _, adapters = load.restore_adapters(cfg, model, lora, directory, step)
    base_specs = param_lib.logical_specs(model, cfg.data.seq_len)
    tensors, modules = adapter_tensors(adapters, cfg.model, base_specs, lora)
    with staged(out_dir) as stage:
        _write_adapter(stage, tensors, modules, lora)
    return modules


def _write_adapter(out_dir: str, tensors: dict[str, np.ndarray], modules: list[str],
                   lora: lora_lib.LoraConfig) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, os.path.join(out_dir, 'adapter_model.safetensors'),
              metadata={'format': 'pt'})
    config = {'peft_type': 'LORA', 'task_type': 'CAUSAL_LM', 'r': lora.rank,
              'lora_alpha': lora.alpha, 'lora_dropout': 0.0, 'target_modules': modules,
              'bias': 'none', 'fan_in_fan_out': False, 'inference_mode': True,
              'base_model_name_or_path': None}
    with open(os.path.join(out_dir, 'adapter_config.json'), 'w') as f:
        json.dump(config, f, indent=2, sort_keys=True)

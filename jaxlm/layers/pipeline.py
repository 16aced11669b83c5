"""A stack of identical blocks, applied in sequence or as a pipeline over the `stage` mesh axis.

`LayerStack` is generic: it knows only that `block(*block_args)` is a Linen module called as
`block(x, *per_example) -> (x, _)`, where `x` and every `per_example` array lead with the batch
dim. The decoder-only model uses it for its layers, the encoder-decoder for both its stacks (the
decoder's per-example inputs include the encoder output).

Parameter layout (the same pipelined or not): every leaf of the block's parameters is stacked on
a leading dim of length `num_layers`, in layer order, exactly as `nn.scan` stores it. Only the
logical name of that dim changes: `layers` (normally replicated) without a pipeline, `stage`
(mapped by `logical_axis_rules` onto the `stage` mesh axis) with one. So a checkpoint restores
onto a pipelined or a non-pipelined mesh unchanged (orbax only reshards), and decoding, evaluation
and the Hugging Face export, which scan the same stack, never see the pipeline.

Schedule (single SPMD program, MaxText/Praxis style; ANCHORS_TRAINING.md §1b): the batch splits
into M microbatches (rows i::M, so each spans every data shard). A state of shape
[stages, microbatch, ...] holds what every stage works on; each tick all stages run at once
(`jax.vmap` with `spmd_axis_name`, so stage s computes on the devices of stage s), then the
state rolls by one stage (XLA lowers the roll to a collective-permute) and stage 0 takes the next
microbatch. With R repeats (circular schedule) layer group g = r * stages + s lives on stage s:
the stack is viewed as [R, stages, layers_per_stage], a microbatch leaving the last stage waits
in the microbatch buffer and re-enters stage 0 for its next repeat, which needs M >= stages.
Ticks: R * M + stages - 1, of which stages - 1 are fill/drain bubble on every device.

Costs to know: the microbatch buffer [M, microbatch, ...] is replicated over `stage` (the input
and output of the whole batch, as in GPipe); autodiff keeps every tick's activations (GPipe
memory; the block's remat policy applies per layer; with R > 1 each tick's stage is rematerialised
whole, see below); with R > 1 the contiguous stored split of the stack does not match the circular
assignment, so each step regroups the stage weights with an all-to-all (and their gradients
back). Bubble ticks compute on stale data whose results are never written, so they cost time but
not correctness. Outside the stack (embedding, head, loss) `stage` is not a batch axis: those
parts run replicated over the stages.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.sharding import constrain


@dataclasses.dataclass(frozen=True)
class PipelineSchedule:
    stages: int = 1
    num_microbatches: int = 1
    num_repeats: int = 1

    @property
    def enabled(self) -> bool:
        return self.stages > 1

    @property
    def bubble_fraction(self) -> float:
        """Idle share of each device's ticks: (S - 1) / (R * M + S - 1)."""
        s = self.stages
        return (s - 1) / (self.num_repeats * self.num_microbatches + s - 1)

    def describe(self, num_layers: int) -> str:
        per_stage = num_layers // (self.stages * self.num_repeats)
        return (f'pipeline: {self.stages} stages x {self.num_repeats} repeat(s) x {per_stage} '
                f'layer(s) per stage and repeat ({num_layers // self.stages} layers per stage); '
                f'{self.num_microbatches} microbatches; bubble fraction '
                f'{self.bubble_fraction:.3f} = (stages - 1) / (repeats * microbatches + '
                'stages - 1)')


NO_PIPELINE = PipelineSchedule()  # the layers in sequence


class LayerStack(nn.Module):
    block: Callable[..., nn.Module]  # a Module class (possibly nn.remat-wrapped)
    block_args: tuple  # its constructor's positional arguments
    num_layers: int
    schedule: PipelineSchedule = NO_PIPELINE
    activation_axes: tuple[str | None, ...] = ('batch', 'length', 'act_embed')  # logical, of x

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, *per_example: jax.Array) -> jax.Array:
        axis = 'stage' if self.schedule.enabled else 'layers'
        scanned = nn.scan(self.block, variable_axes={'params': 0},
                          split_rngs={'params': True, 'dropout': True},
                          in_axes=(nn.broadcast,) * len(per_example), length=self.num_layers,
                          metadata_params={nn.PARTITION_NAME: axis})(*self.block_args)
        nn.share_scope(self, scanned)  # its parameters sit directly under this module's name
        if not self.schedule.enabled or self.is_initializing():
            return scanned(x_BxLxD, *per_example)[0]
        apply_layer = functools.partial(_apply_layer, self.block(*self.block_args, parent=None))
        return run_pipeline(apply_layer, self.variables['params'], x_BxLxD, per_example,
                            self.schedule, self.activation_axes)


def _apply_layer(layer: nn.Module, params: Any, x_BxLxD: jax.Array,
                 *per_example: jax.Array) -> jax.Array:
    return layer.apply({'params': params}, x_BxLxD, *per_example)[0]


def split_microbatches(x_Bx_: jax.Array, num_micro: int) -> jax.Array:
    """[B, ...] -> [M, B/M, ...] taking rows i::M (every microbatch spans all data shards)."""
    return x_Bx_.reshape(x_Bx_.shape[0] // num_micro, num_micro, *x_Bx_.shape[1:]).swapaxes(0, 1)


def run_pipeline(apply_layer: Callable[..., jax.Array], stacked_params: Any, x_BxLxD: jax.Array,
                 per_example: tuple[jax.Array, ...], schedule: PipelineSchedule,
                 activation_axes: tuple[str | None, ...]) -> jax.Array:
    """Applies the stacked layers (leading dim = num_layers, in order) to `x` on the schedule.
    Shapes: S stages, M microbatches of Bm rows, R repeats."""
    num_stages, num_micro, repeats = (schedule.stages, schedule.num_microbatches,
                                      schedule.num_repeats)
    stage_axis = nn.logical_to_mesh_axes(('stage',))[0]  # None outside a rules context
    # [L, ...] -> [R, S, L/(R*S), ...]: layer r*S*per + s*per + j is layer j of stage s, repeat r.
    view_RxSxLs = jax.tree.map(lambda p: p.reshape(repeats, num_stages, -1, *p.shape[1:]),
                               stacked_params)
    buf_MxBmxLxD = constrain(split_microbatches(x_BxLxD, num_micro), (None, *activation_axes))
    side_Mx_ = tuple(split_microbatches(a, num_micro) for a in per_example)
    state_axes = ('stage', *activation_axes)

    def run_stage(params_s: Any, repeat: jax.Array, h_BmxLxD: jax.Array,
                  *side: jax.Array) -> jax.Array:
        layers = jax.tree.map(lambda p: p[0] if repeats == 1 else
                              jax.lax.dynamic_index_in_dim(p, repeat, 0, False), params_s)

        def one_layer(c_BmxLxD: jax.Array, p: Any) -> tuple[jax.Array, None]:
            return apply_layer(p, c_BmxLxD, *side).astype(c_BmxLxD.dtype), None
        return jax.lax.scan(one_layer, h_BmxLxD, layers)[0]

    if repeats > 1:
        # The weights of this tick's repeat are a slice that autodiff would keep for every tick
        # (7B, 4 stages x FSDP 4, 2 repeats: 26.7 instead of 9.1 GiB of temporaries);
        # rematerialising the stage keeps only its input, for one more forward pass of it. With
        # R = 1 the weights are loop-invariant and nothing is copied.
        run_stage = jax.checkpoint(run_stage, policy=jax.checkpoint_policies.nothing_saveable)

    stages_fn = jax.vmap(run_stage, in_axes=(1, 0, 0) + (0,) * len(side_Mx_),
                         spmd_axis_name=stage_axis)
    stage_ids_S = jnp.arange(num_stages)

    def tick(carry: tuple[jax.Array, jax.Array], t: jax.Array):
        state_SxBmxLxD, buf_MxBmxLxD = carry
        # Stage 0 takes work item t (microbatch t % M); its repeats > 0 come back through buf.
        first_BmxLxD = jax.lax.dynamic_index_in_dim(buf_MxBmxLxD, t % num_micro, 0, False)
        state_SxBmxLxD = constrain(state_SxBmxLxD.at[0].set(first_BmxLxD), state_axes)
        item_S = t - stage_ids_S  # the work item each stage holds this tick
        repeat_S = jnp.clip(item_S // num_micro, 0, repeats - 1)
        side = tuple(jnp.take(a, item_S % num_micro, axis=0) for a in side_Mx_)
        out_SxBmxLxD = constrain(stages_fn(view_RxSxLs, repeat_S, state_SxBmxLxD, *side),
                                 state_axes)
        done = t - (num_stages - 1)  # the item leaving the last stage
        slot = done % num_micro
        valid = (done >= 0) & (done < repeats * num_micro)
        keep_BmxLxD = jax.lax.dynamic_index_in_dim(buf_MxBmxLxD, slot, 0, False)
        buf_MxBmxLxD = jax.lax.dynamic_update_index_in_dim(
            buf_MxBmxLxD, jnp.where(valid, out_SxBmxLxD[-1], keep_BmxLxD), slot, 0)
        return (jnp.roll(out_SxBmxLxD, 1, axis=0), buf_MxBmxLxD), None

    state_SxBmxLxD = jnp.zeros((num_stages, *buf_MxBmxLxD.shape[1:]), buf_MxBmxLxD.dtype)
    num_ticks = repeats * num_micro + num_stages - 1
    (_, buf_MxBmxLxD), _ = jax.lax.scan(tick, (state_SxBmxLxD, buf_MxBmxLxD),
                                        jnp.arange(num_ticks))
    return buf_MxBmxLxD.swapaxes(0, 1).reshape(x_BxLxD.shape)

"""config.eval.tasks: benchmark scores logged during training beside eval_loss."""

from conftest import read_metrics, small_config

from jaxlm.evaluation.periodic import make_eval_hook
from jaxlm.trainer.loop import train


def test_tasks_are_logged_at_eval_steps(shared_data_dir, tmp_path):
    cfg = small_config(shared_data_dir, data=2)
    cfg.num_train_steps = 4
    cfg.eval_every_steps = 2
    cfg.eval.update(tasks='arc_easy,perplexity', limit=4, batch_size=4)
    train(cfg, str(tmp_path), devices=__import__('jax').devices()[:2],
          eval_hook=make_eval_hook(cfg))
    evals = [r for r in read_metrics(tmp_path) if 'eval_loss' in r]
    assert [r['step'] for r in evals] == [2, 4]
    for r in evals:
        assert 0.0 <= r['arc_easy/acc'] <= 1.0
        assert r['perplexity/bits_per_byte'] > 0

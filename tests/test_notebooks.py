"""Every notebook under notebooks/ runs top to bottom (outputs are not stored in the repo)."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / 'notebooks').glob('*.ipynb'))


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, shared_data_dir, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get('outputs') for c in nb.cells if c.cell_type == 'code'), \
        f'{path.name}: strip outputs before committing'
    monkeypatch.setenv('JAXLM_DATA_DIR', str(shared_data_dir))  # the kernel inherits it
    NotebookClient(nb, timeout=600, kernel_name='python3',
                   resources={'metadata': {'path': str(path.parent)}}).execute()

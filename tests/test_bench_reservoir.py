"""The reservoir speed bench (learnbench.tools.bench_reservoir) and the ESN's sparse run it relies on.

- ESN.run's two paths, the CSR one (one sequence, no graph: ridge's collection) and the dense one (a batch, or a
  graph through the reservoir), each equal reservoirpy's Reservoir states on the same matrices (float64);
- the bench's two fits predict the same test RMSE to 1e-6 relative (what it reports), and its tables have every row.
Timings are never asserted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learnbench.models import ESN
from learnbench.tools import bench_reservoir


def esn(**options) -> ESN:
    torch.manual_seed(0)
    return ESN(2, 1, **{"units": 60, "spectral_radius": 1.1, "leak_rate": 0.3, "bias_scaling": 0.2, **options}).double()


@pytest.mark.parametrize("path", ["sparse", "dense batch", "dense graph"])
def test_both_run_paths_equal_reservoirpys_states(path):
    reservoirpy = pytest.importorskip("reservoirpy")
    model = esn(learn_input=path == "dense graph")
    u = torch.rand(2, 200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    batch = u if path == "dense batch" else u[:1]
    with torch.set_grad_enabled(path == "dense graph"):
        assert model.sparse_run_applies(len(batch)) == (path == "sparse")
        ours = model.run(batch).detach().numpy()
    matrices = {"lr": 0.3, "W": model.w.detach().numpy(), "Win": model.w_in.detach().numpy(), "bias": model.b.detach().numpy()}
    for i, sequence in enumerate(batch.numpy()):
        node = reservoirpy.nodes.Reservoir(**matrices)  # a fresh node: each sequence from a zero state
        np.testing.assert_allclose(ours[i], node.run(sequence), rtol=0, atol=1e-12)


def test_the_bench_fits_agree_with_reservoirpy_and_report_every_row(capsys):
    pytest.importorskip("reservoirpy")
    result = bench_reservoir.main(["--units", "40", "--steps", "400", "--repeats", "1", "--growth", "--growth-units", "20", "40",
                                   "--growth-steps", "300", "400", "--growth-repeats", "1", "--json"])
    fit = result["fit"]
    assert fit["rmse_relative_difference"] < 1e-6 and fit["ours_rmse"] < 0.1  # a forecast, the same one
    assert fit["ours_s"] > 0 and fit["reservoirpy_s"] > 0
    assert [row["units"] for row in result["growth_units"]] == [20, 40]
    assert [row["steps"] for row in result["growth_steps"]] == [300, 400]
    assert all(row["fit_s"] >= row["solve_s"] for row in result["growth_units"] + result["growth_steps"])

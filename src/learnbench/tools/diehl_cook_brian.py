"""model=diehl_cook's network against Brian 2 running the reference's equations (peter-u-diehl/stdp-mnist,
Diehl&Cook_spiking_MNIST.py, translated to Brian 2): the same input spikes, weights and thresholds, one presentation
per image in test mode (theta frozen, no STDP), the excitatory spike counts of each neuron compared.

Two steps, because Brian 2 (2.9) needs numpy < 2.4 and the suite's environment has a newer one:

    python -m learnbench.tools.diehl_cook_brian dump CHECKPOINT --data-dir DATASETS --images 5 --out dc_oracle.npz [--rate 127.5]
    <python with brian2 and numpy < 2.4> src/learnbench/tools/diehl_cook_brian.py brian dc_oracle.npz

`dump` (learnbench's environment) writes the input spikes of each image [images, steps, 784], the checkpoint's
weights and theta, and the suite's excitatory spikes for those inputs; `brian` (numpy and brian2 only) simulates the
reference's equations on the same spikes and prints, per image, both networks' spike counts per neuron and their
correlation. Brian integrates with its default method for these equations (Euler, as Brian 1 did for the reference);
the suite integrates the membrane exactly with the conductances held at their mean over the step (models/diehl_cook.py),
and delivers an input spike within its own step where Brian delivers it after the step's update: spike times differ
by a step or so, and the counts should agree closely, not exactly.
"""

from __future__ import annotations

import argparse
import json


def dump(args) -> None:
    import numpy as np
    import torch

    from learnbench.checkpoints import load_module
    from learnbench.data.vision import VisionDataModule

    torch.set_num_threads(1)
    module = load_module(args.checkpoint)
    model = module.model.eval()  # test mode: theta frozen, at the checkpoint's clock (model.dt)
    data = VisionDataModule(dataset="mnist", data_dir=args.data_dir, normalize="unit", val_size=1)
    data.setup()
    x = data.splits.test[0][: args.images]
    with torch.no_grad():
        spikes, active = model.encode_active(x, args.rate)
        inputs = torch.zeros(len(x), spikes.shape[1], model.input_dim, dtype=spikes.dtype)
        inputs.scatter_(2, active.unsqueeze(1).expand(-1, spikes.shape[1], -1), spikes)
        exc, _ = model.simulate(inputs @ model.input_weight.T, model.theta)
    np.savez(args.out, inputs=inputs.numpy(), weight=model.input_weight.detach().numpy(), theta=model.theta.numpy(),
             exc=exc.numpy(), dt=model.dt, exc_to_inh=model.exc_to_inh, inh_to_exc=model.inh_to_exc)
    print(json.dumps({"out": args.out, "images": len(x), "steps": int(inputs.shape[1]), "dt": model.dt,
                      "suite_spikes_per_image": exc.sum(dim=(1, 2)).tolist()}))


def brian(args) -> None:
    import brian2 as b
    import numpy as np

    b.prefs.codegen.target = "numpy"
    saved = np.load(args.file)
    inputs, weight, theta, ours = saved["inputs"], saved["weight"], saved["theta"], saved["exc"]
    dt = float(saved["dt"])
    images, steps, n_input = inputs.shape
    n_e = weight.shape[0]
    rows = []
    for image in range(images):
        b.start_scope()
        b.defaultclock.dt = dt * b.ms
        step, index = np.nonzero(inputs[image])
        source = b.SpikeGeneratorGroup(n_input, index, step * dt * b.ms)
        # The reference's equations (Brian 1 -> 2): conductances in units of the leak conductance (Brian 1's "/ nS").
        exc = b.NeuronGroup(n_e, """
            dv/dt = ((-65*mV - v) + ge * (-v) + gi * (-100*mV - v)) / (100*ms) : volt (unless refractory)
            dge/dt = -ge / (1*ms) : 1
            dgi/dt = -gi / (2*ms) : 1
            theta : volt
            """, threshold="v > -52*mV + theta", reset="v = -65*mV", refractory=5 * b.ms, method="euler")
        inh = b.NeuronGroup(n_e, """
            dv/dt = ((-60*mV - v) + ge * (-v) + gi * (-85*mV - v)) / (10*ms) : volt (unless refractory)
            dge/dt = -ge / (1*ms) : 1
            dgi/dt = -gi / (2*ms) : 1
            """, threshold="v > -40*mV", reset="v = -45*mV", refractory=2 * b.ms, method="euler")
        exc.v, inh.v = -65 * b.mV, -60 * b.mV
        exc.theta = theta * b.mV
        drive = b.Synapses(source, exc, "w : 1", on_pre="ge_post += w")
        drive.connect()
        drive.w = weight.T.flatten()  # connect() orders synapses by source, then target
        to_inh = b.Synapses(exc, inh, on_pre=f"ge_post += {float(saved['exc_to_inh'])}")
        to_inh.connect(j="i")
        to_exc = b.Synapses(inh, exc, on_pre=f"gi_post += {float(saved['inh_to_exc'])}")
        to_exc.connect(condition="i != j")
        monitor = b.SpikeMonitor(exc)
        b.run(steps * dt * b.ms)
        theirs = np.bincount(np.asarray(monitor.i), minlength=n_e)
        mine = ours[image].sum(axis=0)
        correlation = float(np.corrcoef(mine, theirs)[0, 1]) if mine.std() > 0 and theirs.std() > 0 else float("nan")
        rows.append({"image": image, "suite_spikes": int(mine.sum()), "brian_spikes": int(theirs.sum()),
                     "suite_winner": int(mine.argmax()), "brian_winner": int(theirs.argmax()),
                     "count_correlation": round(correlation, 3),
                     "suite_top3": np.argsort(-mine)[:3].tolist(), "brian_top3": np.argsort(-theirs)[:3].tolist()})
        print(json.dumps(rows[-1]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    d = commands.add_parser("dump")
    d.add_argument("checkpoint")
    d.add_argument("--data-dir", required=True)
    d.add_argument("--images", type=int, default=5)
    d.add_argument("--out", default="dc_oracle.npz")
    d.add_argument("--rate", type=float, default=None,
                   help="the input's maximum rate in Hz (default: the model's, 63.75; a quiet image's k-th showing adds 31.875 k)")
    r = commands.add_parser("brian")
    r.add_argument("file")
    args = parser.parse_args()
    dump(args) if args.command == "dump" else brian(args)


if __name__ == "__main__":
    main()

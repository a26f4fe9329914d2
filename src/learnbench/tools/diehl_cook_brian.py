"""model=diehl_cook's network against Brian 2 running the reference's equations (peter-u-diehl/stdp-mnist,
Diehl&Cook_spiking_MNIST.py, translated to Brian 2): the same input spikes, weights and thresholds, one presentation
per image in test mode (theta frozen, no STDP), the excitatory spike counts of each neuron compared.

Two steps, because Brian 2 (2.9) needs numpy < 2.4 and the suite's environment has a newer one:

    python -m learnbench.tools.diehl_cook_brian dump CHECKPOINT --data-dir DATASETS --images 5 --out dc_oracle.npz [--rate 127.5]
    <python with brian2 and numpy < 2.4> src/learnbench/tools/diehl_cook_brian.py brian dc_oracle.npz

Training too: does the reference's network, plasticity included, learn faster than ours? `train` (numpy and brian2
only) runs the reference's whole training loop on the first N training images (file order): STDP at every spike with
the weights changing during the image, input delays U(0, 10) ms, normalisation to 78 before every showing, quiet images
shown again at +1 intensity, 150 ms of rest, dt 0.5 ms; it saves the weights, theta and every image's spike counts
every `--save-every` images (resumable). `score` (learnbench's environment) puts them into a model=diehl_cook
checkpoint of ours, assigns the labels from the Brian run's training responses as our runs do (the table forgetting
with a time constant of 10,000 images), prints learning_summary and scores the test set with our simulator:

    <brian python> src/learnbench/tools/diehl_cook_brian.py train --data-dir DATASETS --images 2048 --out dc_brian_train.npz
    python -m learnbench.tools.diehl_cook_brian score dc_brian_train.npz CHECKPOINT --data-dir DATASETS [--images 10000]

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


REFERENCE_NEURONS = {
    "exc": """
        dv/dt = ((-65*mV - v) + ge * (-v) + gi * (-100*mV - v)) / (100*ms) : volt (unless refractory)
        dge/dt = -ge / (1*ms) : 1
        dgi/dt = -gi / (2*ms) : 1
        dtheta/dt = -theta / (1e7*ms) : volt
        """,
    "inh": """
        dv/dt = ((-60*mV - v) + ge * (-v) + gi * (-85*mV - v)) / (10*ms) : volt (unless refractory)
        dge/dt = -ge / (1*ms) : 1
        dgi/dt = -gi / (2*ms) : 1
        """,
}
# The reference's eqs_stdp_ee, eqs_stdp_pre_ee and eqs_stdp_post_ee (nu_pre 1e-4, nu_post 1e-2, w in [0, 1]).
REFERENCE_STDP = dict(
    model="""w : 1
        post2before : 1
        dpre/dt = -pre / (20*ms) : 1 (event-driven)
        dpost1/dt = -post1 / (20*ms) : 1 (event-driven)
        dpost2/dt = -post2 / (40*ms) : 1 (event-driven)""",
    on_pre="ge_post += w; pre = 1.; w = clip(w - 0.0001 * post1, 0, 1)",
    on_post="post2before = post2; w = clip(w + 0.01 * pre * post2before, 0, 1); post1 = 1.; post2 = 1.",
)


def train(args) -> None:
    """The reference's training loop (Diehl&Cook_spiking_MNIST.py with test_mode = False) in Brian 2."""
    import os
    import time

    import brian2 as b
    import numpy as np

    b.prefs.codegen.target = args.target
    b.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    n_e, n_in = args.neurons, 784
    images = np.fromfile(os.path.join(args.data_dir, "MNIST/raw/train-images-idx3-ubyte"), dtype=np.uint8, offset=16)
    labels = np.fromfile(os.path.join(args.data_dir, "MNIST/raw/train-labels-idx1-ubyte"), dtype=np.uint8, offset=8)
    images = images.reshape(-1, n_in)
    b.start_scope()
    b.defaultclock.dt = args.dt * b.ms
    source = b.PoissonGroup(n_in, rates=np.zeros(n_in) * b.Hz)
    exc = b.NeuronGroup(n_e, REFERENCE_NEURONS["exc"], threshold="v > -52*mV + theta",
                        reset="v = -65*mV; theta += 0.05*mV", refractory=5 * b.ms, method="euler")
    inh = b.NeuronGroup(n_e, REFERENCE_NEURONS["inh"], threshold="v > -40*mV", reset="v = -45*mV",
                        refractory=2 * b.ms, method="euler")
    exc.v, inh.v = -65 * b.mV, -60 * b.mV
    drive = b.Synapses(source, exc, **REFERENCE_STDP)
    drive.connect()  # ordered by source, then target: w.reshape(784, n_e)
    if args.delays:
        drive.delay = "rand() * 10*ms"
    to_inh = b.Synapses(exc, inh, on_pre="ge_post += 10.4")
    to_inh.connect(j="i")
    to_exc = b.Synapses(inh, exc, on_pre="gi_post += 17.0")
    to_exc.connect(condition="i != j")
    monitor = b.SpikeMonitor(exc, record=False)
    net = b.Network(source, exc, inh, drive, to_inh, to_exc, monitor)

    start, counts = 0, np.zeros((args.images, n_e), dtype=np.int32)
    weight = (rng.random((n_in, n_e)) + 0.01) * 0.3  # the reference's random/XeAe.npy
    if os.path.exists(args.out):  # resume: the weights, theta and responses so far (the simulator's state restarts at rest)
        saved = np.load(args.out)
        start, weight = int(saved["done"]), saved["weight"].T.copy()
        exc.theta = saved["theta"] * b.mV
        counts[:start] = saved["counts"][:start]
    drive.w = weight.flatten()
    clock, before = time.perf_counter(), np.asarray(monitor.count).copy()
    for j in range(start, args.images):
        intensity = 2.0
        while True:
            current = np.asarray(drive.w).reshape(n_in, n_e)  # (not named w: Brian would see a local w beside its own)
            drive.w = (current * (78.0 / current.sum(axis=0))).flatten()  # normalize_weights before every showing
            source.rates = images[j] / 8.0 * intensity * b.Hz
            net.run(350 * b.ms)
            now = np.asarray(monitor.count).copy()
            shown, before = now - before, now
            source.rates = 0 * b.Hz
            net.run(150 * b.ms)
            if shown.sum() >= 5 or intensity >= 2.0 + args.max_extra:
                break
            intensity += 1.0
        counts[j] = shown
        done = j + 1
        if done % args.save_every == 0 or done == args.images:
            state = dict(weight=np.asarray(drive.w).reshape(n_in, n_e).T, theta=np.asarray(exc.theta) / 1e-3,
                         counts=counts, labels=labels[: args.images], done=done, dt=args.dt, delays=args.delays)
            np.savez(args.out, **state)
            if done in args.keep:  # a prefix to score later: <out>.<images>.npz
                np.savez(f"{args.out.removesuffix('.npz')}.{done}.npz", **state)
            print(json.dumps({"images": done, "seconds": round(time.perf_counter() - clock, 1),
                              "spikes_per_image": float(counts[max(0, done - args.save_every):done].sum(1).mean())}), flush=True)


def load_trained(model, rule, saved) -> None:
    """A `train` file's weights and theta into our model, and its training responses into the rule's table as our runs
    keep it at batch 1 (every image's counts, the table forgetting with the rule's assign_window)."""
    import numpy as np
    import torch

    done = int(saved["done"])
    with torch.no_grad():
        model.input_weight.copy_(torch.from_numpy(saved["weight"]))
        model.theta.copy_(torch.from_numpy(saved["theta"]))
        rule.responses.zero_()
        rule.counts.zero_()
        counts, labels = torch.from_numpy(saved["counts"][:done]), torch.from_numpy(saved["labels"][:done].astype(np.int64))
        for image in range(done):
            rule.record_responses(counts[image : image + 1], labels[image : image + 1], 1)


def score(args) -> None:
    """Brian's trained weights and theta in our network: learning_summary, and the test accuracy by our simulator."""
    import numpy as np
    import torch

    from learnbench.checkpoints import load_module
    from learnbench.tools.diehl_cook_eval import learning_summary, test_accuracy

    torch.set_num_threads(1)
    saved = np.load(args.file)
    module = load_module(args.checkpoint)
    model, rule = module.model.eval(), module.rule
    load_trained(model, rule, saved)
    summary = learning_summary(model, rule)
    rule.solve(model, [s.clone() for s in rule.statistics()])
    images, accuracy = test_accuracy(model, args.data_dir, args.images)
    print(json.dumps({"file": args.file, "trained_images": int(saved["done"]), "test_images": images,
                      "test_acc": accuracy, **summary}))


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
    t = commands.add_parser("train")
    t.add_argument("--data-dir", required=True)
    t.add_argument("--images", type=int, default=2048)
    t.add_argument("--neurons", type=int, default=100)
    t.add_argument("--dt", type=float, default=0.5)
    t.add_argument("--no-delays", dest="delays", action="store_false")
    t.add_argument("--max-extra", type=int, default=9, help="quiet showings at most (ours: model.max_presentations 10)")
    t.add_argument("--save-every", type=int, default=256)
    t.add_argument("--keep", type=lambda text: {int(n) for n in text.split(",")}, default=set(),
                   help="image counts (multiples of --save-every) whose state is also kept in its own file, e.g. 2048,4096")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--target", default="cython", help="Brian 2's code generation target (cython, or numpy without a compiler)")
    t.add_argument("--out", default="dc_brian_train.npz")
    s = commands.add_parser("score")
    s.add_argument("file")
    s.add_argument("checkpoint", help="any model=diehl_cook checkpoint of ours with the same neurons (the template)")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--images", type=int, default=10000)
    args = parser.parse_args()
    {"dump": dump, "brian": brian, "train": train, "score": score}[args.command](args)


if __name__ == "__main__":
    main()

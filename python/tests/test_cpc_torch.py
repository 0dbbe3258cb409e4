"""cpc_torch against the cpc binary: on checkpoints that `cpc pretrain` writes for each preset
family (tiny, audio-tiny, text-tiny, and tiny with LAYER_NORM's encoder), the torch module's
loss, per-offset losses and accuracies, activations and every parameter gradient equal `cpc
debug-step`'s on the same crops, clips and sentences; a module saved by cpc_torch loads back
into cpc (debug-step --init, pretrain --resume) with the same loss.

Run by tests/pytorch.rs (`cargo test --release --test pytorch`), or by hand:

    CPC_BIN=target/release/cpc PYTHONPATH=python python -m unittest discover -s python/tests -v

Tolerances (float32 on both sides; the GPU kernels sum in another order than torch's CPU
kernels: tiled matrix products, workgroup and subgroup reductions):
- loss and loss_k: 1e-5 relative (measured: at most 2.4e-7 apart);
- z, c and the scores: 1e-5 of the tensor's largest magnitude (measured: at most 6e-7);
- each gradient: 2e-4 of that gradient's largest magnitude, elementwise (measured: at most
  2.9e-5, the vision encoder's, whose sums run over the most terms);
- accuracy_k: equal up to one query changing sides on a near tie (1 / Q_k).
Elementwise gradients can part further where a ReLU's input lies within float32 rounding of
zero and the two sides put it on different sides: after three SGD steps at lr 0.5 on
audio-tiny (seed 1's clips), 2 of 61440 first-conv inputs were below 1e-5 and torch's
float32 conv flipped one, putting encoder.convs.0.weight's gradient 1 % (of its largest
magnitude) from cpc's, while cpc's agreed with torch in float64 to 8e-7. The fixtures here
have no such tie.
A file cpc_torch writes holds the same float32 values, so cpc's losses from it are equal
exactly.
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

import torch
from safetensors.torch import load_file, save_file

import cpc_torch

LOSS_RTOL = 1e-5
ACT_RTOL = 1e-5
GRAD_RTOL = 2e-4
PRESETS = ("tiny", "audio-tiny", "text-tiny")
# The vision encoder's other parts, which tiny lacks: layer norms, a 5 x 5 stem, blocks of
# two convs, a stage of stride 1 without blocks; and a jitter, which debug-step turns off.
LAYER_NORM = """
[model]
jitter = 1
[model.encoder]
layer_norm = true
[model.encoder.stem]
kernel = 5
channels = 16
stride = 1
[[model.encoder.stages]]
stride = 2
channels = 24
blocks = 2
convs_per_block = 2
[[model.encoder.stages]]
stride = 1
channels = 32
blocks = 0
convs_per_block = 2
"""
BATCH = 4  # the pretraining batch: small, so that the runs are quick


def cpc(*args):
    """Run the cpc binary on the software adapter; its stdout, or a failure with both streams."""
    exe = os.environ.get("CPC_BIN")
    if not exe:
        raise unittest.SkipTest("CPC_BIN is not set (the cpc binary to test against)")
    run = subprocess.run([exe, *args, "--software"], capture_output=True, text=True,
                         env={**os.environ, "CPC_TUNE": "off"})
    if run.returncode != 0:
        raise AssertionError(f"cpc {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}")
    return run.stdout


def examples(model, seed):
    """A batch for `model`'s modality: crops in [-1, 1], clips, or token ids with an empty
    sentence, a full one and ids across the vocabulary."""
    g = torch.Generator().manual_seed(seed)
    enc = model.encoder
    if model.modality == "vision":
        return {"crops": torch.rand(3, 3, enc.crop, enc.crop, generator=g) * 2 - 1}
    if model.modality == "audio":
        return {"clips": torch.randn(3, enc.window, generator=g) * 0.3}
    b, l, w = 2, enc.sentences, enc.width
    ids = torch.randint(1, enc.vocab, (b, l, w), generator=g)
    lengths = torch.randint(0, w + 1, (b, l), generator=g)
    lengths[0, 0], lengths[0, 1], lengths[1, 2] = 0, w, 1
    ids[torch.arange(w)[None, None, :] >= lengths[..., None]] = cpc_torch.model.PAD
    return {"ids": ids}


def close(test, got, want, rtol, what):
    """Elementwise |got - want| <= rtol * max |want|."""
    scale = want.abs().max().clamp(min=1e-30)
    err = ((got.detach() - want).abs().max() / scale).item()
    test.assertLessEqual(err, rtol, f"{what}: {err:.3g} of its largest magnitude {scale:.3g}")


class Fixtures:
    """Per preset (and tiny with LAYER_NORM), in one temporary folder: `cpc pretrain` for 2
    steps, a batch, and `cpc debug-step`'s dump of that checkpoint on that batch."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="cpc-torch-")
        self.runs = {}
        config = os.path.join(self.dir, "layer-norm.toml")
        with open(config, "w") as f:
            f.write(LAYER_NORM)
        runs = [(p, p, []) for p in PRESETS] + [("tiny-layer-norm", "tiny", ["--config", config])]
        for name, preset, extra in runs:
            run = os.path.join(self.dir, name)
            cpc("pretrain", "--preset", preset, *extra, "--steps", "2", "--batch", str(BATCH),
                "--log-every", "1", "--out", run)
            ck = os.path.join(run, "checkpoint.safetensors")
            batch = examples(cpc_torch.load(ck), seed=len(self.runs))
            batch_path = os.path.join(self.dir, f"{name}-batch.safetensors")
            save_file(batch, batch_path)
            dump = self.debug_step(ck, batch_path, f"{name}-dump")
            self.runs[name] = (run, ck, batch_path, next(iter(batch.values())), dump)

    def debug_step(self, init, batch_path, name):
        out = os.path.join(self.dir, name + ".safetensors")
        cpc("debug-step", "--init", init, "--batch", batch_path, "--dump", out)
        return load_file(out)


FIXTURES = None


def setUpModule():
    global FIXTURES
    FIXTURES = Fixtures()


def tearDownModule():
    shutil.rmtree(FIXTURES.dir, ignore_errors=True)


class ParityTest(unittest.TestCase):
    def assert_same_step(self, model, batch, dump):
        """The module's forward and backward on `batch` against a debug-step dump."""
        model.zero_grad()
        out = model.loss(batch)
        out.loss.backward()
        want = dump["loss"][0]
        self.assertLessEqual(abs(out.loss.item() - want.item()), LOSS_RTOL * abs(want.item()),
                             f"loss {out.loss.item()} vs cpc's {want.item()}")
        close(self, out.loss_k, dump["loss_k"], LOSS_RTOL, "loss_k")
        queries = torch.tensor([s.shape[0] for s in out.scores], dtype=torch.float32)
        self.assertTrue(bool(((out.accuracy_k - dump["accuracy_k"]).abs() <= 1.01 / queries).all()),
                        f"accuracy_k {out.accuracy_k} vs cpc's {dump['accuracy_k']}")
        close(self, out.z, dump["z"], ACT_RTOL, "z")
        close(self, out.c, dump["c"], ACT_RTOL, "c")
        for k, s in enumerate(out.scores):
            close(self, s, dump[f"scores.{k}"], ACT_RTOL, f"scores.{k}")
        names = [n for n, _ in model.named_parameters()]
        self.assertEqual(sorted(names), sorted(k[5:] for k in dump if k.startswith("grad.")))
        for name, p in model.named_parameters():
            close(self, p.grad, dump["grad." + name], GRAD_RTOL, "grad." + name)
        return out

    def test_loss_and_every_gradient_equal_debug_step(self):
        for preset in FIXTURES.runs:
            with self.subTest(preset=preset):
                _, ck, _, batch, dump = FIXTURES.runs[preset]
                self.assert_same_step(cpc_torch.load(ck), batch, dump)

    def test_a_module_saved_from_torch_loads_back_into_debug_step(self):
        for preset in FIXTURES.runs:
            with self.subTest(preset=preset):
                _, ck, batch_path, batch, dump = FIXTURES.runs[preset]
                model = cpc_torch.load(ck)
                # Change every weight in torch: noise of a tenth of each tensor's spread.
                g = torch.Generator().manual_seed(1)
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(0.1 * p.std() * torch.randn(p.shape, generator=g))
                # Without the moments (which `--resume` alone needs): weights and metadata.
                tuned = os.path.join(FIXTURES.dir, f"{preset}-tuned.safetensors")
                cpc_torch.save(model, tuned, moments=False)
                self.assertFalse(any(k.startswith("optimizer.") for k in load_file(tuned)))
                again = FIXTURES.debug_step(tuned, batch_path, f"{preset}-tuned-dump")
                self.assert_same_step(model, batch, again)
                moved = max(((again[k] - dump[k]).abs().max() / dump[k].abs().max()).item()
                            for k in dump if k.startswith("grad."))
                self.assertGreater(moved, 100 * GRAD_RTOL, "cpc ran the changed weights")
                # What was saved is what torch holds, bit for bit; it loads back as it was.
                back = cpc_torch.load(tuned)
                for (name, p), q in zip(model.state_dict().items(), back.state_dict().values()):
                    self.assertTrue(torch.equal(p, q), name)
                self.assertEqual(back.vocabulary, model.vocabulary)

    def test_pretrain_resumes_from_a_torch_written_file_as_from_its_own(self):
        for preset in PRESETS:
            with self.subTest(preset=preset):
                run, ck, _, _, _ = FIXTURES.runs[preset]
                losses = []
                # Text also resumes from weights changed in torch (the quickest run).
                sources = ("cpc", "torch", "changed") if preset == "text-tiny" else ("cpc", "torch")
                for source in sources:
                    out = os.path.join(FIXTURES.dir, f"{preset}-resume-{source}")
                    os.makedirs(out)
                    target = os.path.join(out, "checkpoint.safetensors")
                    if source == "cpc":
                        shutil.copy(ck, target)
                    else:
                        model = cpc_torch.load(ck)
                        if source == "changed":
                            with torch.no_grad():
                                model.gru.bias_hh_l0.add_(0.5)
                        cpc_torch.save(model, target)
                    shutil.copy(os.path.join(run, "metrics.jsonl"), out)
                    cpc("pretrain", "--preset", preset, "--steps", "3", "--batch", str(BATCH),
                        "--log-every", "1", "--out", out, "--resume")
                    with open(os.path.join(out, "metrics.jsonl")) as f:
                        rows = [json.loads(r) for r in f]
                    self.assertEqual([r["step"] for r in rows], [0, 1, 2], source)
                    losses.append(rows[-1]["loss"])
                self.assertEqual(losses[0], losses[1], "step 3's loss, resumed from cpc's file and from torch's")
                if len(losses) > 2:
                    self.assertNotEqual(losses[0], losses[2], "the run resumed from the changed weights")

    def test_the_frozen_encoder_and_a_ddp_wrap(self):
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        _, ck, _, batch, dump = FIXTURES.runs["tiny"]
        encoder = cpc_torch.load_encoder(ck)
        self.assertFalse(any(p.requires_grad for p in encoder.parameters()))
        close(self, encoder(batch), dump["z"], ACT_RTOL, "the frozen encoder's z")
        # One process, the in-memory store: nothing leaves the process.
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        try:
            wrapped = DistributedDataParallel(cpc_torch.load(ck))
            wrapped(batch).loss.backward()
            for name, p in wrapped.module.named_parameters():
                close(self, p.grad, dump["grad." + name], GRAD_RTOL, "DDP grad." + name)
            tuned = DistributedDataParallel(cpc_torch.load_encoder(ck, frozen=False))
            tuned(batch).sum().backward()
            self.assertTrue(all(p.grad is not None for p in tuned.parameters()))
        finally:
            dist.destroy_process_group()

    def test_bad_inputs_are_refused_with_the_shape(self):
        _, ck, batch_path, _, _ = FIXTURES.runs["text-tiny"]
        model = cpc_torch.load(ck)
        ids = load_file(batch_path)["ids"]
        bad = ids.clone()
        bad[0, 0, 3] = 5  # a word after the empty sentence's PAD
        with self.assertRaisesRegex(ValueError, "after PAD"):
            model.loss(bad)
        with self.assertRaisesRegex(ValueError, r"\[B, 6, 16\]"):
            model.loss(ids[:, :, :8])
        with self.assertRaisesRegex(ValueError, "not a cpc checkpoint"):
            cpc_torch.load(batch_path)
        vision = cpc_torch.load(FIXTURES.runs["tiny"][1])
        with self.assertRaisesRegex(ValueError, r"\[B, 3, 32, 32\]"):
            vision.loss(torch.zeros(2, 3, 30, 30))


if __name__ == "__main__":
    unittest.main()

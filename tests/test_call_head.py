"""The gate ablation (``model.call_head=gate``): a Co-LLM-style deferral head in place of the <CALL> token.

P(<CALL>) under the full softmax is the gate's sigmoid, the gate's loss never reaches the LM's logits,
the LM learns every counted position, the gate survives export and loading, and the cascade reads it.
"""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from lacy.cascade.decoder import CascadeDecoder, p_call_teacher_forced
from lacy.cascade.hf import encode_text
from lacy.cascade.policies import ThresholdPolicy
from lacy.cli import main
from lacy.data.tokenizer import call_token_id, train_tokenizer
from lacy.io import CHECKSUM_FILE, IntegrityError
from lacy.plan import parameters
from lacy.profiles import ConfigError, ModelConfig, TrainConfig, get_profile
from lacy.train.model import GATE_FILE, build_slm, call_gate, count_parameters, export_model, load_model
from lacy.train.module import LacyLM
from lacy.train.objective import gate_logits_from, gate_loss_sum, gated_call_logits, token_terms, without_call
from lacy.train.run import run_dir
from test_helpers import SENTENCES

VOCAB, SEQ, CALL, PAD = 64, 16, 4, 0
GATED = ModelConfig(d_model=16, n_layer=1, n_head=2, d_ff=32, call_head="gate")


def test_gated_logits_give_p_call_sigmoid_of_the_gate_and_keep_the_other_tokens_ratios():
    g = torch.Generator().manual_seed(0)
    logits, gate = torch.randn(3, 5, VOCAB, generator=g, dtype=torch.float64) * 4, torch.randn(3, 5, generator=g) * 3
    probs = torch.softmax(gated_call_logits(logits, gate, CALL).double(), dim=-1)
    assert torch.allclose(probs[..., CALL], torch.sigmoid(gate.double()), atol=1e-6)
    rest = torch.softmax(without_call(logits, CALL), dim=-1) * (1 - torch.sigmoid(gate.double())).unsqueeze(-1)
    assert torch.allclose(probs.index_fill(-1, torch.tensor([CALL]), 0.0), rest, atol=1e-6)


def test_gate_loss_is_lm_loss_on_every_counted_position_plus_bce_of_the_selection():
    g = torch.Generator().manual_seed(1)
    gate = torch.randn(2, 4, generator=g)
    logits = gated_call_logits(torch.randn(2, 4, VOCAB, generator=g), gate, CALL).requires_grad_()
    targets = torch.randint(5, VOCAB, (2, 4), generator=g)
    call = torch.tensor([[True, False, False, False], [False, True, False, False]])
    learn = torch.tensor([[False, True, True, False], [True, False, True, True]])  # [0, 3]: ignored
    terms = token_terms(logits, targets, CALL)
    recovered = gate_logits_from(logits, targets, terms, CALL)
    assert torch.allclose(recovered, gate, atol=1e-5)
    loss_sum, n_counted = gate_loss_sum(terms, recovered, call, learn)
    counted = call | learn
    bce = F.binary_cross_entropy_with_logits(gate, call.float(), reduction="none")
    assert int(n_counted) == 7
    assert loss_sum.item() == pytest.approx((terms.learn + bce)[counted].sum().item(), rel=1e-5)
    # The gate's BCE alone moves only the <CALL> column; the LM term never touches it.
    torch.where(counted, F.softplus(-recovered), 0.0).sum().backward(retain_graph=True)
    assert logits.grad.index_fill(-1, torch.tensor([CALL]), 0.0).abs().max() < 1e-6
    assert logits.grad[..., CALL].abs().sum() > 0
    logits.grad = None
    torch.where(counted, terms.learn, 0.0).sum().backward()
    assert logits.grad[..., CALL].abs().max() == 0
    with pytest.raises(ValueError, match="overlap"):
        gate_loss_sum(terms, recovered, call, call)


def test_gated_module_trains_the_gate_and_counts_ignored_positions_out():
    model = build_slm(GATED, VOCAB, SEQ, PAD, 1, 2, seed=0, call_id=CALL)
    assert call_gate(model) is not None and model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert count_parameters(model) == parameters(GATED, VOCAB, SEQ)
    module = LacyLM(model, "ignore_facts", CALL, TrainConfig(batch_size=4, max_steps=2, warmup_steps=1))
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(5, VOCAB, (4, SEQ + 1), generator=g)
    batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "valid": torch.ones(4, SEQ, dtype=torch.bool),
             "fact": torch.rand(4, SEQ, generator=g) < 0.3}
    loss, stats = module.compute_loss(batch)
    n_fact = int(batch["fact"].sum())
    assert int(stats["n_call"]) == 0 and int(stats["n_counted"]) == 4 * SEQ - round(0.6 * n_fact)
    loss.backward()
    assert call_gate(model).call_gate.weight.grad.abs().sum() > 0  # learned positions: label 0


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_export_and_load_give_back_the_same_gated_model(arch, tmp_path):
    tokenizer = train_tokenizer(SENTENCES, 400)
    cfg = ModelConfig(arch=arch, d_model=16, n_layer=1, n_head=2, d_ff=32, call_head="gate")
    model = build_slm(cfg, len(tokenizer), 64, tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id,
                      seed=0, call_id=call_token_id(tokenizer)).eval()
    with torch.no_grad():
        call_gate(model).call_gate.bias.fill_(1.5)  # not the initial value: the loaded gate must be this one
    loaded, _ = load_model(export_model(model, tokenizer, tmp_path / arch))
    ids = torch.tensor([encode_text(tokenizer, SENTENCES[0])])
    with torch.inference_mode():
        expected, got = model(input_ids=ids).logits, loaded(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-6)
    assert call_gate(loaded).call_gate.bias.item() == 1.5


def test_gate_without_a_call_id_and_unknown_heads_are_refused():
    with pytest.raises(ValueError, match="call_id"):
        build_slm(GATED, VOCAB, SEQ, PAD, 1, 2, seed=0)
    with pytest.raises(ValueError, match="call_id=4"):
        LacyLM(build_slm(GATED, VOCAB, SEQ, PAD, 1, 2, seed=0, call_id=5), "lacy", CALL, TrainConfig())
    with pytest.raises(ConfigError, match=r"valid choices: token, gate; set it with --set model.call_head=token\|gate"):
        get_profile("smoke", {"model.call_head": "softmax"})


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory, cache_root):
    out = tmp_path_factory.mktemp("gate") / "run"
    argv = ["train", "--corpus", "synthbio", "--method", "lacy", "--profile", "smoke", "--set", "model.call_head=gate",
            "--out", str(out), "--cache", str(cache_root), "--no-progress"]
    assert main(argv) == 0
    return out


def test_gated_run_exports_loads_and_the_cascade_reads_the_gate(gated_run, tmp_path):
    smoke = get_profile("smoke")
    gated = smoke.override({"model.call_head": "gate"})
    assert run_dir("synthbio", "lacy", gated, 0) != run_dir("synthbio", "lacy", smoke, 0)
    summary = json.loads((gated_run / "summary.json").read_text())
    assert summary["config"]["model"]["call_head"] == "gate" and summary["call_fraction"] > 0
    folder = gated_run / "model"
    assert (folder / GATE_FILE).is_file() and GATE_FILE in (folder / CHECKSUM_FILE).read_text()
    assert json.loads((folder / "config.json").read_text())["lacy_call_head"] == "gate"
    rng = torch.random.get_rng_state()
    model, tokenizer = load_model(folder)
    assert torch.equal(torch.random.get_rng_state(), rng)  # loading the gate draws nothing
    head = call_gate(model)
    assert head is not None and head.call_id == tokenizer.convert_tokens_to_ids("<CALL>")

    text = "Ada Lovelace was born in London."
    ids = torch.tensor([encode_text(tokenizer, text)])
    with torch.inference_mode():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        gate = torch.sigmoid(head.call_gate(hidden).squeeze(-1))[0, :-1].double().numpy()
    assert p_call_teacher_forced(model, tokenizer, [text])[0] == pytest.approx(gate, abs=1e-5)

    for bias, calls_every_step in ((30.0, True), (-30.0, False)):
        with torch.no_grad():
            head.call_gate.bias.fill_(bias)
        generation = CascadeDecoder(model, tokenizer, None, ThresholdPolicy(0.5), max_new_tokens=5).generate("Ada Lovelace")
        assert generation.n_calls == (len(generation.p_call) if calls_every_step else 0)
        assert all((p > 0.99) if calls_every_step else (p < 0.01) for p in generation.p_call)


def test_token_runs_have_no_gate(tmp_path, cache_root):
    out = tmp_path / "token"
    assert main(["train", "--corpus", "synthbio", "--method", "lacy", "--profile", "smoke", "--out", str(out),
                 "--cache", str(cache_root), "--no-progress"]) == 0
    assert not (out / "model" / GATE_FILE).exists()
    assert "lacy_call_head" not in json.loads((out / "model" / "config.json").read_text())
    model, _ = load_model(out / "model")
    assert call_gate(model) is None


def test_a_missing_or_corrupt_gate_is_refused(gated_run, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(gated_run / "model", folder)
    (folder / GATE_FILE).unlink()
    with pytest.raises(IntegrityError, match=GATE_FILE):
        load_model(folder)
    (folder / CHECKSUM_FILE).unlink()  # no hashes: the gate file itself is checked
    with pytest.raises(FileNotFoundError, match=f"no {GATE_FILE}.*re-export"):
        load_model(folder)
    (folder / GATE_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model(folder)


def test_gated_model_evaluates_and_sweeps(gated_run, cache_root, tmp_path, capsys):
    common = ["--model", str(gated_run / "model"), "--corpus", "synthbio", "--profile", "smoke", "--helper", "doc",
              "--cache", str(cache_root)]
    out = tmp_path / "eval.json"
    assert main(["evaluate", *common, "--policy", "budget", "--budget", "0.22", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert 0 <= result["call_rate"] <= 1 and result["method"] == "lacy" and result["call_head"] == "gate"
    csv = tmp_path / "sweep.csv"
    assert main(["sweep", *common, "--out", str(csv)]) == 0
    table = pd.read_csv(csv)
    assert table.loc[table["target_rate"] == 0, "call_rate"].item() == 0 and set(table["call_head"]) == {"gate"}
    assert math.isclose(table.loc[table["target_rate"] == 1, "call_rate"].item(), 1.0)
    capsys.readouterr()

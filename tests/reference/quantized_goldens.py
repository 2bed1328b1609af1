#!/usr/bin/env python3
"""Golden outputs for the fixtures stored as Q8_0 / Q4_0 (what `surf chunk --dtype q8_0|q4_0` makes).

For each fixture and block format this quantizes the weights the chunker quantizes (nn.Linear
weights whose `in` is a multiple of 32; see ComponentPlan::linear_weights) with a numpy port of
GGML's reference quantizers, dequantizes them, and runs the shared float64 reference
(shared/reference/ref_models.py, through make_fixtures.run_all) on those weights. It writes, next to
the fixture's golden.safetensors/golden.json:

  golden-<dtype>.safetensors   inputs (as in golden.safetensors) + expected outputs of the quantized model
  golden-<dtype>.json          golden.json's rules and tensor table, plus
                                 quantization.tensors: HF name -> shape and sha256 of the GGML block bytes
                                   (the C++ chunker must produce exactly these bytes),
                                 observed_numeric_noise: a float32 run of the same math vs float64,
                                 versus_unquantized: max abs error and top-1 agreement against the
                                   unquantized goldens.

  /usr/bin/python3 tests/reference/quantized_goldens.py [--reference ../shared/reference] tests/fixtures/*

numpy only; deterministic (regeneration is byte-identical). Never run at build or test time.
GPT-2 fixtures are skipped: their Conv1D weights are [in, out] and stay unquantized, and the head is tied.
LLaMA-family fixtures include Qwen2 and Mistral (same weight names; biases stay f32).
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np

DTYPES = {"q8_0": "Q8_0", "q4_0": "Q4_0"}
QK = 32


# ---------------------------------------------------------------- GGML block formats (numpy port)
# Every float operation is float32 and rounded on its own, as GGML's reference C code reads.

def quantize_q8_0(x):
    """x: float32 [..., K] -> (d: float16 [..., K/32], qs: int8 [..., K/32, 32])."""
    x = np.asarray(x, np.float32).reshape(-1, QK)
    amax = np.max(np.abs(x), axis=1)
    d = (amax / np.float32(127.0)).astype(np.float32)
    with np.errstate(divide="ignore"):
        idv = np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    v = (x * idv[:, None]).astype(np.float32)
    # roundf: half away from zero (computed in float64, where |v| + 0.5 is exact)
    q = np.sign(v) * np.floor(np.abs(v.astype(np.float64)) + 0.5)
    return d.astype(np.float16), q.astype(np.int8)


def quantize_q4_0(x):
    """x: float32 [..., K] -> (d: float16 [nb], codes: uint8 [nb, 32] in element order, 0..15)."""
    x = np.asarray(x, np.float32).reshape(-1, QK)
    idx = np.argmax(np.abs(x), axis=1)  # first element of largest magnitude (GGML's strict <)
    mx = x[np.arange(x.shape[0]), idx]
    d = (mx / np.float32(-8.0)).astype(np.float32)
    with np.errstate(divide="ignore"):
        idv = np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    v = (x * idv[:, None]).astype(np.float32)
    q = np.trunc((v + np.float32(8.5)).astype(np.float32)).astype(np.int32)  # (int8_t) cast truncates
    q = np.minimum(q, 15)
    return d.astype(np.float16), q.astype(np.uint8)


def block_bytes(dtype, d, q):
    """The GGML block layout: {f16 d; codes}, blocks in row-major order."""
    nb = d.shape[0]
    dbytes = d.astype("<f2").view(np.uint8).reshape(nb, 2)
    if dtype == "Q8_0":
        codes = q.view(np.uint8).reshape(nb, QK)
    else:
        codes = (q[:, :QK // 2] | (q[:, QK // 2:] << 4)).astype(np.uint8)
    return np.concatenate([dbytes, codes], axis=1).tobytes()


def dequantize(dtype, d, q):
    df = d.astype(np.float32)[:, None]
    if dtype == "Q8_0":
        return (q.astype(np.float32) * df).astype(np.float32)
    return ((q.astype(np.int32) - 8).astype(np.float32) * df).astype(np.float32)


def quantize(dtype, w):
    d, q = quantize_q8_0(w) if dtype == "Q8_0" else quantize_q4_0(w)
    return block_bytes(dtype, d, q), dequantize(dtype, d, q).reshape(w.shape)


# ---------------------------------------------------------------- which weights the plugins list

def linear_weight(family, name, cfg):
    """Mirrors the plugins' plans (PlanBuilder::linear / linear_weight): nn.Linear weights only."""
    if family == "llama":
        proj = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")
        return name.endswith(proj) or name == "lm_head.weight"
    if family == "bert":
        if name.startswith("cls.") or ".pooler." in name or name.startswith("pooler."):
            return False
        return name.endswith(("attention.self.query.weight", "attention.self.key.weight",
                              "attention.self.value.weight", "attention.output.dense.weight",
                              "intermediate.dense.weight", "output.dense.weight"))
    if family == "gpt_neox":
        return name.endswith(("attention.query_key_value.weight", "attention.dense.weight", "mlp.dense_h_to_4h.weight",
                              "mlp.dense_4h_to_h.weight")) or name == "embed_out.weight"
    if family == "t5":
        return name.endswith(tuple(f"{a}.{p}.weight" for a in ("SelfAttention", "EncDecAttention")
                                   for p in ("q", "k", "v", "o"))) or \
            name.endswith(("DenseReluDense.wi.weight", "DenseReluDense.wi_0.weight", "DenseReluDense.wi_1.weight",
                           "DenseReluDense.wo.weight")) or name == "lm_head.weight"
    return False


def canonical(family, disk_name, layout):
    """disk name -> the reference's parameter name (make_fixtures.disk_tensors, inverted)."""
    pre = layout.get("prefix", "gpt_neox." if family == "gpt_neox" else "")
    if family in ("bert", "gpt_neox") and pre and disk_name.startswith(pre):
        return disk_name[len(pre):]
    return disk_name


# ---------------------------------------------------------------- comparisons

def masked(a, mask):
    return a if mask is None else a[np.broadcast_to(mask, a.shape)]


def compare(name, a, b, inp, family):
    mask = None
    if family in ("llama", "gpt_neox") and name in ("logits", "last_hidden_state", "logits_default_positions"):
        mask = inp["attention_mask"].astype(bool)[:, :, None]
    if family in ("llama", "gpt_neox") and name == "hidden_states":
        mask = inp["attention_mask"].astype(bool)[None, :, :, None]
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    out = {"max_abs_err": float(np.max(masked(np.abs(a64 - b64), mask))),
           "max_abs_unquantized": float(np.max(masked(np.abs(b64), mask)))}
    if name in ("logits", "logits_default_positions", "generation_logits", "mlm_logits"):
        ta, tb = np.argmax(a64, axis=-1), np.argmax(b64, axis=-1)
        agree = ta == tb
        if mask is not None:
            agree = agree[mask[..., 0]]
        out["top1_agreement"] = float(np.mean(agree))
        out["top1_positions"] = int(agree.size)
    return out


def tol_fraction(a, b, mask, atol=5e-5, rtol=5e-5):
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(masked(np.abs(a64 - b64) / (atol + rtol * np.abs(b64)), mask)))


# ---------------------------------------------------------------- main

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fixtures", nargs="+")
    ap.add_argument("--reference", default=os.path.normpath(os.path.join(here, "..", "..", "..", "shared", "reference")))
    ap.add_argument("--dtype", action="append", choices=sorted(DTYPES), help="default: both")
    args = ap.parse_args()
    sys.path.insert(0, args.reference)
    import make_fixtures as MF  # noqa: E402
    import ref_models as R  # noqa: E402
    import st_io  # noqa: E402

    for fixture in args.fixtures:
        gpath = os.path.join(fixture, "golden.json")
        if not os.path.exists(gpath):
            continue
        golden = json.load(open(gpath))
        spec = golden["generator_spec"]
        family, layout = spec["family"], spec.get("layout", {})
        if family not in ("llama", "bert", "t5", "gpt_neox"):
            print(f"skip {fixture}: {family} keeps its weights unquantized")
            continue
        cfg = MF.model_cfg(spec)
        disk = {}
        for fn in sorted(os.listdir(fixture)):
            if fn.startswith("model") and fn.endswith(".safetensors"):
                t, _, _, _ = st_io.load_file(os.path.join(fixture, fn))
                disk.update(t)
        gt, _, _, _ = st_io.load_file(os.path.join(fixture, "golden.safetensors"))
        inp = {k: v for k, v in gt.items() if golden["tensors"].get(k, {}).get("role") == "input"}
        ref_outs = {k: v for k, v in gt.items() if golden["tensors"].get(k, {}).get("role", "").startswith("expected")}

        for dt in args.dtype or sorted(DTYPES):
            dtype = DTYPES[dt]
            P, qinfo = {}, {}
            for name, arr in disk.items():
                key = canonical(family, name, layout)
                val = np.asarray(arr)
                if val.dtype.kind == "f":
                    val = val.astype(np.float32)  # exact: the stored values
                    if val.ndim == 2 and val.shape[1] % QK == 0 and linear_weight(family, key, cfg):
                        blocks, deq = quantize(dtype, val)
                        qinfo[name] = {"shape": list(val.shape), "sha256": hashlib.sha256(blocks).hexdigest()}
                        val = deq
                P[key] = val.astype(np.float64)
            outs, gen = MF.run_all(family, cfg, P, inp, R.F64, layout)
            outs32, gen32 = MF.run_all(family, cfg, P, inp, R.Num("f32"), layout)

            tensors = {}
            for k, v in inp.items():
                tensors[k] = ("I64", np.asarray(v).astype(np.int64))
            if gen is not None:
                tensors["generated_ids"] = ("I64", np.asarray(gen).astype(np.int64))
            for k, v in outs.items():
                tensors[k] = ("F32", np.asarray(v, np.float64).astype(np.float32))
            base = os.path.join(fixture, f"golden-{dt}")
            st_io.save_file(base + ".safetensors", tensors,
                            metadata={"format": "pt", "generator": "tests/reference/quantized_goldens.py",
                                      "reference_precision": "float64 (stored as float32)",
                                      "weights": f"{dtype} (GGML blocks), dequantized"})

            noise, versus = {}, {}
            for k, v in outs.items():
                mask = None
                if family in ("llama", "gpt_neox") and k in ("logits", "last_hidden_state", "logits_default_positions"):
                    mask = inp["attention_mask"].astype(bool)[:, :, None]
                if family in ("llama", "gpt_neox") and k == "hidden_states":
                    mask = inp["attention_mask"].astype(bool)[None, :, :, None]
                noise[k] = {"max_abs_err": float(np.max(masked(np.abs(np.asarray(outs32[k], np.float64) - v), mask))),
                            "max_fraction_of_fp32_compute_tolerance": tol_fraction(outs32[k], v, mask)}
                if k in ref_outs:
                    versus[k] = compare(k, v, ref_outs[k], inp, family)
            if gen is not None:
                noise["generated_ids_equal"] = bool(np.array_equal(gen32, gen))
                versus["generated_ids"] = {"equal": bool(np.array_equal(gen, ref_outs["generated_ids"])),
                                           "matching_tokens": int(np.sum(np.asarray(gen) == ref_outs["generated_ids"])),
                                           "tokens": int(np.size(gen))}
            margins = None
            if "generation_logits" in outs:
                s = np.sort(np.asarray(outs["generation_logits"], np.float64), axis=-1)
                margins = {"min_top2_margin": float(np.min(s[..., -1] - s[..., -2]))}

            gj = {k: golden[k] for k in ("fixture", "model_family", "hf_class", "tolerance")}
            gj["golden_file"] = os.path.basename(base) + ".safetensors"
            gj["reference"] = ("the shared float64 reference (shared/reference/ref_models.py) on the fixture's weights "
                               f"with every linear weight the chunker quantizes replaced by its {dtype} "
                               "dequantization (GGML reference quantizer, numpy port)")
            gj["tensors"] = {}
            for k, spec_t in golden["tensors"].items():
                if k in tensors:
                    spec_t = dict(spec_t)
                    spec_t["shape"] = list(np.shape(tensors[k][1]))
                    gj["tensors"][k] = spec_t
            gj["quantization"] = {"dtype": dtype, "block": QK,
                                  "rule": "nn.Linear weights of the plugin's plan whose input width is a multiple of 32",
                                  "tensors": dict(sorted(qinfo.items()))}
            gj["observed_numeric_noise"] = {"f32": noise}
            gj["generation_margins"] = margins
            gj["versus_unquantized"] = versus
            with open(base + ".json", "w") as f:
                json.dump(gj, f, indent=2)
                f.write("\n")
            line = ", ".join(f"{k} {v['max_abs_err']:.3g}" + (f" top1 {v['top1_agreement']:.3f}" if "top1_agreement" in v else "")
                             for k, v in versus.items() if "max_abs_err" in v)
            gids = versus.get("generated_ids")
            print(f"{os.path.basename(fixture)} {dtype}: {len(qinfo)} tensors quantized; vs unquantized: {line}"
                  + (f"; generated ids {gids['matching_tokens']}/{gids['tokens']} equal" if gids else "")
                  + f"; f32 noise {max(v['max_fraction_of_fp32_compute_tolerance'] for k, v in noise.items() if isinstance(v, dict)):.3f} of fp32 tolerance")


if __name__ == "__main__":
    main()

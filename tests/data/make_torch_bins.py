#!/usr/bin/python3
"""Test data for the pytorch_model.bin reader, written with torch.save (Debian's python3-torch).

Run by hand, never at build or test time; the outputs are committed:
    /usr/bin/python3 tests/data/make_torch_bins.py

torch/<fixture>-bin/   config.json + the fixture's weights as torch.save wrote them, to be
                       compared bit for bit with the safetensors fixture:
  llama-tiny-attnbias-linear-rope-bin  one pytorch_model.bin holding what model.state_dict() gives
                       (an OrderedDict with _metadata), q/k/v as views into one fused storage
                       (storage offsets), the embedding as an nn.Parameter;
  qwen2-tiny-untied-bf16-sharded-bin   bf16 shards pytorch_model-0000k-of-00002.bin (plain dicts,
                       as transformers' sharding writes them) + pytorch_model.bin.index.json;
  gpt-neox-tiny-sequential-buffers-bin  old-Pythia style with BoolStorage attention.bias buffers,
                       its zip entries re-packed deflate-compressed (reads that must decompress).
torch/tiny.bin          a handful of tensors of every dtype with known values (see TINY below).
torch/noncontiguous.bin a transposed (non-contiguous) tensor.
torch/malicious.bin     a torch-shaped zip whose data.pkl calls os.system("touch MARKER") when
                        unpickled by pickle/torch.load; the reader must refuse it by name.
"""
import collections
import json
import os
import pickle
import shutil
import sys
import zipfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures")
OUT = os.path.join(HERE, "torch")
MARKER = "/tmp/surf-malicious-pickle-ran"  # the malicious pickle would create this file

ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.int16, "I64": np.int64, "BOOL": np.bool_}


def read_safetensors(path):
    """name -> torch tensor, in file order (numpy only; bf16 kept bit-exact via an int16 view)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    out = collections.OrderedDict()
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, end = e["data_offsets"]
        a = np.frombuffer(raw[8 + n + b:8 + n + end], dtype=ST_DTYPES[e["dtype"]]).reshape(e["shape"]).copy()
        t = torch.from_numpy(a)
        if e["dtype"] == "BF16":
            t = t.view(torch.bfloat16)
        out[name] = t
    return out


def fixture_weights(name):
    d = os.path.join(FIXTURES, name)
    index = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = collections.OrderedDict()
    for fn in files:
        out.update(read_safetensors(os.path.join(d, fn)))
    return out


def fresh_dir(name):
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    shutil.copy(os.path.join(FIXTURES, name[:-len("-bin")], "config.json"), d)
    return d


def entry(name, compression=zipfile.ZIP_STORED):
    """A zip entry with a fixed date, so that reruns write identical files."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = compression
    return info


def llama_single():
    name = "llama-tiny-attnbias-linear-rope"
    w = fixture_weights(name)
    sd = collections.OrderedDict()
    for k, t in w.items():
        sd[k] = t
    # q, k, v of each layer as views into one fused storage: storage offsets, shared storages.
    layers = sorted({k.split(".")[2] for k in w if k.startswith("model.layers.")}, key=int)
    for i in layers:
        p = f"model.layers.{i}.self_attn."
        parts = [w[p + x + "_proj.weight"] for x in "qkv"]
        fused = torch.cat(parts, 0)
        at = 0
        for x, t in zip("qkv", parts):
            sd[p + x + "_proj.weight"] = fused[at:at + t.shape[0]]
            at += t.shape[0]
    sd["model.embed_tokens.weight"] = torch.nn.Parameter(w["model.embed_tokens.weight"], requires_grad=False)
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("model", {"version": 1})])  # as state_dict() has
    d = fresh_dir(name + "-bin")
    torch.save(sd, os.path.join(d, "pytorch_model.bin"))


def qwen2_sharded():
    name = "qwen2-tiny-untied-bf16-sharded"
    w = fixture_weights(name)
    keys = list(w)
    shards = [keys[:len(keys) // 2], keys[len(keys) // 2:]]
    d = fresh_dir(name + "-bin")
    weight_map, total = {}, 0
    for i, ks in enumerate(shards):
        fn = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save({k: w[k] for k in ks}, os.path.join(d, fn))
        for k in ks:
            weight_map[k] = fn
            total += w[k].numel() * w[k].element_size()
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)


def neox_deflated():
    name = "gpt-neox-tiny-sequential-buffers"
    w = fixture_weights(name)  # carries the BOOL attention.bias buffers of old Pythia checkpoints
    d = fresh_dir(name + "-bin")
    plain = os.path.join(d, "plain.bin")
    torch.save(w, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(os.path.join(d, "pytorch_model.bin"), "w",
                                                        compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(entry(info.filename, zipfile.ZIP_DEFLATED), src.read(info.filename))
    os.remove(plain)
    assert torch.load(os.path.join(d, "pytorch_model.bin"))["gpt_neox.layers.0.attention.bias"].dtype == torch.bool


# Known values the unit test checks (inputs chosen here, not computed outputs).
def tiny():
    base = torch.arange(12, dtype=torch.float32) * 0.5  # 0, 0.5, ..., 5.5
    sd = collections.OrderedDict()
    sd["f32"] = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    sd["f16"] = torch.tensor([0.5, -1.5, 2.25], dtype=torch.float16)
    sd["bf16"] = torch.tensor([1.0, -2.0, 3.5, 0.25], dtype=torch.bfloat16)
    sd["i64"] = torch.tensor([7, -3, 1 << 40], dtype=torch.int64)
    sd["scalar"] = torch.tensor(-1e4)
    sd["mask"] = torch.ones(2, 2, dtype=torch.bool).tril()
    sd["whole"] = base.view(3, 4)
    sd["rows_1_2"] = base.view(3, 4)[1:3]  # offset 4 elements into the same storage
    sd["param"] = torch.nn.Parameter(torch.tensor([9.0, 8.0]))
    sd["empty"] = torch.zeros(0, 3)
    torch.save(sd, os.path.join(OUT, "tiny.bin"))
    torch.save({"t": torch.arange(6, dtype=torch.float32).view(2, 3).t()}, os.path.join(OUT, "noncontiguous.bin"))


class RunsACommand:
    def __reduce__(self):
        return (os.system, ("touch " + MARKER,))


def malicious():
    payload = pickle.dumps({"model.embed_tokens.weight": RunsACommand()}, protocol=2)
    assert b"system" in payload
    with zipfile.ZipFile(os.path.join(OUT, "malicious.bin"), "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(entry("archive/data.pkl"), payload)
        z.writestr(entry("archive/version"), "3\n")


def main():
    if not sys.executable.startswith("/usr/bin/"):
        print("run with Debian's /usr/bin/python3 (python3-torch)", file=sys.stderr)
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    llama_single()
    qwen2_sharded()
    neox_deflated()
    tiny()
    malicious()
    for root, _, files in sorted(os.walk(OUT)):
        for fn in sorted(files):
            p = os.path.join(root, fn)
            print(f"{os.path.relpath(p, OUT)}: {os.path.getsize(p)} bytes")


if __name__ == "__main__":
    main()

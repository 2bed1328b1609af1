#!/usr/bin/env python3
"""An architecture added from outside the tree: install the SDK into a temporary prefix, build
examples/out_of_tree_plugin against it with pkg-config alone, drop the .so into a directory, and
check that the installed `surf` lists it and runs it (from the HF directory and from a chunk store)
with outputs equal to an independent pure-Python computation."""
import glob, json, math, os, random, shutil, struct, subprocess, sys, tempfile

build_root, source_root = sys.argv[1], sys.argv[2]


def run(cmd, env=None, **kw):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, **kw)
    if r.returncode != 0:
        sys.exit(f"FAILED: {' '.join(cmd)}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, values) in tensors.items():
        fmt = {"F32": "f", "I64": "q"}[dtype]
        blob = struct.pack("<%d%s" % (len(values), fmt), *values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    h = json.dumps(header).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        fmt = {"F32": "f", "I64": "q"}[info["dtype"]]
        raw = data[8 + n + a:8 + n + b]
        out[name] = (info["shape"], list(struct.unpack("<%d%s" % (len(raw) // struct.calcsize(fmt), fmt), raw)))
    return out


tmp = tempfile.mkdtemp(prefix="surf-oot-")
try:
    dest = os.path.join(tmp, "inst")
    run(["meson", "install", "-C", build_root, "--no-rebuild", "--destdir", dest, "--quiet"])
    pcs = glob.glob(os.path.join(dest, "**", "surf-sdk.pc"), recursive=True)
    assert pcs, "meson install did not install surf-sdk.pc"
    surf = glob.glob(os.path.join(dest, "**", "bin", "surf"), recursive=True)[0]
    libdir = os.path.dirname(glob.glob(os.path.join(dest, "**", "libsurf-sdk.so"), recursive=True)[0])
    assert glob.glob(os.path.join(dest, "**", "include", "surf", "plugin.h"), recursive=True), "headers not installed"
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]), PKG_CONFIG_SYSROOT_DIR=dest,
               LD_LIBRARY_PATH=libdir, SURF_PLUGIN_PATH="")

    # Build the example as its own project, against the installed SDK only.
    ex_build = os.path.join(tmp, "example-build")
    run(["meson", "setup", ex_build, os.path.join(source_root, "examples", "out_of_tree_plugin")], env=env)
    run(["ninja", "-C", ex_build], env=env)
    plugin_dir = os.path.join(tmp, "plugins")
    os.makedirs(plugin_dir)
    shutil.copy(os.path.join(ex_build, "libsurf-example-mlp.so"), plugin_dir)

    listing = run([surf, "plugins", "--plugin-dir", plugin_dir], env=env).stdout
    assert "[example-mlp]" in listing and "loaded" in listing, listing

    # A checkpoint for it, and the expected output computed here in float64.
    H, I, L, V = 8, 16, 3, 20
    rnd = random.Random(7)
    def rand(n, s): return [rnd.gauss(0, s) for _ in range(n)]
    W = {"embed.weight": ("F32", [V, H], rand(V * H, 0.5))}
    for l in range(L):
        p = f"blocks.{l}."
        W[p + "norm.weight"] = ("F32", [H], [1 + x for x in rand(H, 0.1)])
        W[p + "norm.bias"] = ("F32", [H], rand(H, 0.1))
        W[p + "up.weight"] = ("F32", [I, H], rand(I * H, 0.4))
        W[p + "up.bias"] = ("F32", [I], rand(I, 0.1))
        W[p + "down.weight"] = ("F32", [H, I], rand(H * I, 0.3))
        W[p + "down.bias"] = ("F32", [H], rand(H, 0.1))
    ckpt = os.path.join(tmp, "ckpt")
    os.makedirs(ckpt)
    write_safetensors(os.path.join(ckpt, "model.safetensors"), W)
    json.dump({"model_type": "example-mlp", "hidden_size": H, "intermediate_size": I, "num_layers": L,
               "vocab_size": V}, open(os.path.join(ckpt, "config.json"), "w"))
    ids, mask = [3, 1, 4, 1, 5, 9, 2, 6], [1, 1, 1, 1, 1, 1, 0, 0]
    write_safetensors(os.path.join(tmp, "in.safetensors"),
                      {"input_ids": ("I64", [2, 4], ids), "attention_mask": ("I64", [2, 4], mask)})

    def f32(x): return struct.unpack("<f", struct.pack("<f", x))[0]
    def expected_row(tok):
        x = [f32(v) for v in W["embed.weight"][2][tok * H:(tok + 1) * H]]
        for l in range(L):
            p = f"blocks.{l}."
            m = sum(x) / H
            var = sum((v - m) ** 2 for v in x) / H
            h = [(x[j] - m) / math.sqrt(var + 1e-5) * W[p + "norm.weight"][2][j] + W[p + "norm.bias"][2][j] for j in range(H)]
            u = [sum(W[p + "up.weight"][2][i * H + j] * h[j] for j in range(H)) + W[p + "up.bias"][2][i] for i in range(I)]
            u = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in u]
            x = [x[j] + sum(W[p + "down.weight"][2][j * I + i] * u[i] for i in range(I)) + W[p + "down.bias"][2][j] for j in range(H)]
        return x
    rows = [expected_row(t) for t in ids]
    pooled = []
    for b in range(2):
        real = [rows[b * 4 + i] for i in range(4) if mask[b * 4 + i]]
        pooled += [sum(r[j] for r in real) / len(real) for j in range(H)]
    want = {"last_hidden_state": [v for r in rows for v in r], "pooler_output": pooled}

    store = os.path.join(tmp, "store")
    run([surf, "chunk", ckpt, "--out", store, "--plugin-dir", plugin_dir], env=env)
    for source in (ckpt, store):
        out = os.path.join(tmp, "out.safetensors")
        run([surf, "run", source, "--inputs", os.path.join(tmp, "in.safetensors"), "--output", out,
             "--plugin-dir", plugin_dir, "--cache-size", "1", "--prefetch", "1"], env=env)
        got = read_safetensors(out)
        for name, values in want.items():
            assert len(got[name][1]) == len(values), name
            worst = max(abs(a - e) / (1e-5 + 1e-5 * abs(e)) for a, e in zip(got[name][1], values))
            assert worst <= 1.0, f"{source}: {name} differs from the Python reference (worst/tol {worst:.2f})"
    print("out-of-tree plugin: built against the installed SDK, discovered, run from HF dir and store: ok")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

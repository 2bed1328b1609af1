#!/usr/bin/python3
"""The embedding surface as an installed user meets it: `meson install --destdir` into a
temporary prefix, then, outside the tree and with only pkg-config and that prefix, build
examples/host_app (C++) and examples/c_api (C11), chunk a fixture with the installed `surf`, serve
the store with `surf serve` on 127.0.0.1, and check that the host app, the C example and the
installed Python package (PYTHONPATH = the prefix's site-packages) reproduce the fixture's goldens
(computed by the independent float64 reference) from the store and from the weight server.
No plugin directory is given anywhere: the installed library must find its own plugins.

install_test.py BUILD_ROOT SOURCE_ROOT [B_SANITIZE]

In a sanitizer build (B_SANITIZE not "none") the examples are compiled with the same -fsanitize
flags (the installed library needs its runtime), and the Python part is skipped: /usr/bin/python3
cannot load an extension built with a sanitizer runtime that did not start with the process."""
import glob, json, os, shutil, signal, subprocess, sys, tempfile

import numpy as np

ATOL = RTOL = 5e-5


def run(cmd, env, **kw):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, **kw)
    if r.returncode != 0:
        sys.exit(f"FAILED: {' '.join(cmd)}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def read_safetensors(path):
    data = open(path, "rb").read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dt = {"F32": np.float32, "I64": np.int64}[info["dtype"]]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], dtype=dt).reshape(info["shape"])
    return out


def check_outputs(got, GOLDEN, what):
    keep = GOLDEN["attention_mask"].astype(bool)
    np.testing.assert_allclose(got["logits"][keep], GOLDEN["logits"][keep], atol=ATOL, rtol=RTOL,
                               err_msg=f"{what}: logits")
    np.testing.assert_array_equal(got["generated_ids"], GOLDEN["generated_ids"], err_msg=f"{what}: generated_ids")
    np.testing.assert_allclose(got["generation_logits"], GOLDEN["generation_logits"], atol=ATOL, rtol=RTOL,
                               err_msg=f"{what}: generation_logits")


PY_CHECK = r'''
import sys, numpy as np, surfing_weights as sw
source, prefix, golden_path = sys.argv[1:4]
assert sw.__file__.startswith(prefix), sw.__file__
sys.path.insert(0, sys.argv[4])
import install_test_golden as g
G = g.read_safetensors(golden_path)
with sw.Session.open(source, cache_size=2, prefetch=1) as s:
    out = s.forward({k: G[k] for k in ("input_ids", "attention_mask", "position_ids")})
    full = s.generate({"input_ids": G["gen_input_ids"]}, max_new_tokens=G["generation_logits"].shape[1],
                      stop_at_eos=False, return_dict=True)
    g.check_outputs({"logits": out["logits"], "generated_ids": full["generated_ids"],
                     "generation_logits": full["generation_logits"]}, G, "python " + source)
    assert s.cache_stats()["fetches"] > 0
print("python ok", source)
'''


def main(build_root, source_root, sanitize="none"):
    FIXTURE = os.path.join(source_root, "tests", "fixtures", "llama-tiny-random")
    GOLDEN_PATH = os.path.join(FIXTURE, "golden.safetensors")
    GOLDEN = read_safetensors(GOLDEN_PATH)
    STEPS = GOLDEN["generation_logits"].shape[1]
    tmp = tempfile.mkdtemp(prefix="surf-install-")
    server = None
    try:
        dest = os.path.join(tmp, "inst")
        run(["meson", "install", "-C", build_root, "--no-rebuild", "--destdir", dest, "--quiet"], dict(os.environ))
        pc = glob.glob(os.path.join(dest, "**", "surf-runtime.pc"), recursive=True)
        assert pc, "meson install did not install surf-runtime.pc"
        assert glob.glob(os.path.join(dest, "**", "surf-runtime-c.pc"), recursive=True), "no surf-runtime-c.pc"
        libs = glob.glob(os.path.join(dest, "**", "libsurf-runtime.so.0"), recursive=True)
        assert libs, "libsurf-runtime.so.0 (the SONAME) not installed"
        libdir = os.path.dirname(libs[0])
        assert glob.glob(os.path.join(libdir, "surf", "plugins", "libsurf-llama.so")), "plugins not beside the library"
        for h in ("runtime.h", "surf.h", "tensor_io.h", "tokenizer.h", "runtime_export.h"):
            assert glob.glob(os.path.join(dest, "**", "include", "surf", h), recursive=True), h + " not installed"
        assert not glob.glob(os.path.join(dest, "**", "include", "surf", "storage"), recursive=True), "storage headers installed"
        surf = glob.glob(os.path.join(dest, "**", "bin", "surf"), recursive=True)[0]
        site = os.path.dirname(glob.glob(os.path.join(dest, "**", "surfing_weights", "__init__.py"), recursive=True)[0])
        site = os.path.dirname(site)
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pc[0]), PKG_CONFIG_SYSROOT_DIR=dest,
                   LD_LIBRARY_PATH=libdir, SURF_PLUGIN_PATH="", OPENBLAS_NUM_THREADS="1")
        env.pop("PYTHONPATH", None)

        # Build both examples with the compiler and pkg-config alone, outside the tree.
        work = os.path.join(tmp, "work")
        os.makedirs(work)
        cflags = run(["pkg-config", "--cflags", "--libs", "surf-runtime"], env).stdout.split()
        san = [] if sanitize in ("", "none") else ["-fsanitize=" + sanitize]
        host_app = os.path.join(work, "host_app")
        run(["c++", os.path.join(source_root, "examples", "host_app", "host_app.cpp"), *san, *cflags, "-o", host_app], env)
        cflags_c = run(["pkg-config", "--cflags", "--libs", "surf-runtime-c"], env).stdout.split()
        c_example = os.path.join(work, "surf_c_example")
        run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", os.path.join(source_root, "examples", "c_api", "surf_c_example.c"),
             *san, *cflags_c, "-lm", "-o", c_example], env)

        # A store made by the installed surf, served by it on a free loopback port.
        store = os.path.join(work, "store")
        run([surf, "chunk", FIXTURE, "--out", store], env)
        server = subprocess.Popen([surf, "serve", "--store", "llama=" + store, "--host", "127.0.0.1", "--port", "0"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = server.stdout.readline()
        assert "listening on 127.0.0.1:" in line, f"surf serve did not start: {line!r}"
        port = int(line.split("listening on 127.0.0.1:")[1].split()[0])
        ws = f"ws://127.0.0.1:{port}/llama"

        # The golden checks, shared with the Python subprocess.
        shutil.copy(os.path.abspath(__file__), os.path.join(work, "install_test_golden.py"))
        py_env = dict(env, PYTHONPATH=site, PYTHONDONTWRITEBYTECODE="1")
        for source in (store, ws):
            out_path = os.path.join(work, "out.safetensors")
            r = run([host_app, source, GOLDEN_PATH, "--output", out_path, "--steps", str(STEPS)], env)
            assert "model llama" in r.stdout, r.stdout
            check_outputs(read_safetensors(out_path), GOLDEN, "host_app " + source)
            r = run([c_example, source, GOLDEN_PATH], env)
            assert r.stdout.strip().endswith("ok"), r.stdout
            if not san:
                run(["/usr/bin/python3", "-c", PY_CHECK, source, dest, GOLDEN_PATH, work], py_env)
        print("install: host_app, C example" + ("" if not san else " (Python skipped: sanitizer build)") +
              " built/imported from the prefix; goldens reproduced from store and ws://")
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "none")

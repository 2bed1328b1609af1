"""The Python package against the fixtures' goldens (computed by the independent float64
reference; tolerance atol = rtol = 5e-5 as the fixtures recommend for float32 compute).

Run by meson (suite python): /usr/bin/python3 -m pytest tests/python with PYTHONPATH=<build>/python,
SURF_TEST_FIXTURES and SURF_TEST_PLUGIN_DIR set."""
import asyncio
import gc
import json
import os
import threading
import time

import numpy as np
import pytest

import surfing_weights as sw

FIXTURES = os.environ["SURF_TEST_FIXTURES"]
PLUGINS = os.environ["SURF_TEST_PLUGIN_DIR"]
FIXTURE = os.path.join(FIXTURES, "llama-tiny-random")
ATOL = RTOL = 5e-5


def read_safetensors(path):
    """The golden file, read here with numpy alone (not through the package under test)."""
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


GOLDEN = read_safetensors(os.path.join(FIXTURE, "golden.safetensors"))
FORWARD_IN = {k: GOLDEN[k] for k in ("input_ids", "attention_mask", "position_ids")}
PROMPT = {"input_ids": GOLDEN["gen_input_ids"]}
STEPS = GOLDEN["generation_logits"].shape[1]


def assert_close_masked(got, want, mask):
    keep = mask.astype(bool)
    np.testing.assert_allclose(got[keep], want[keep], atol=ATOL, rtol=RTOL)


@pytest.fixture(scope="module")
def model():
    s = sw.Session.open(FIXTURE, cache_size=2, prefetch=1, plugin_dirs=[PLUGINS])
    yield s
    s.close()


def test_forward_matches_golden(model):
    out = model.forward(FORWARD_IN)
    assert model.model_type == "llama"
    assert out["logits"].shape == GOLDEN["logits"].shape and out["logits"].dtype == np.float32
    assert_close_masked(out["logits"], GOLDEN["logits"], GOLDEN["attention_mask"])


def test_forward_outputs_are_not_copied(model):
    out = model.forward(FORWARD_IN)
    logits = out["logits"]
    # A view over the runtime's buffer: numpy does not own it, and it may not be written.
    assert not logits.flags.owndata and logits.base is not None
    assert not logits.flags.writeable
    # Inputs of other integer types are converted, with the same result.
    out32 = model.forward({k: v.astype(np.int32) for k, v in FORWARD_IN.items()})
    np.testing.assert_array_equal(out32["logits"], logits)


def test_generate_matches_golden(model):
    ids = model.generate(PROMPT, max_new_tokens=STEPS, stop_at_eos=False)
    np.testing.assert_array_equal(ids, GOLDEN["generated_ids"])
    full = model.generate(PROMPT, max_new_tokens=STEPS, stop_at_eos=False, return_dict=True)
    np.testing.assert_allclose(full["generation_logits"], GOLDEN["generation_logits"], atol=ATOL, rtol=RTOL)
    assert list(full["generated_lengths"]) == [STEPS]


def test_iterator_equals_blocking(model):
    blocking = model.generate(PROMPT, max_new_tokens=STEPS, stop_at_eos=False)
    streamed = list(model.generate_iter(PROMPT, max_new_tokens=STEPS, stop_at_eos=False))
    assert [t.sequence for t in streamed] == [0] * STEPS
    prefix = PROMPT["input_ids"].shape[1]
    assert [t.id for t in streamed] == list(blocking[0, prefix:])


def test_callback_sees_tokens_as_produced_and_can_stop(model):
    seen = []
    out = model.generate(PROMPT, max_new_tokens=STEPS, stop_at_eos=False, return_dict=True,
                         on_token=lambda seq, tok, text: seen.append(tok) or len(seen) < 3)
    assert len(seen) == 3 and list(out["generated_lengths"]) == [3]
    prefix = PROMPT["input_ids"].shape[1]
    assert seen == list(GOLDEN["generated_ids"][0, prefix:prefix + 3])


def test_iterator_left_early_stops_generation(model):
    it = model.generate_iter(PROMPT, max_new_tokens=STEPS, stop_at_eos=False)
    first = next(it)
    it.close()  # the worker is told to stop and joined
    prefix = PROMPT["input_ids"].shape[1]
    assert first.id == GOLDEN["generated_ids"][0, prefix]
    # The session is free again.
    np.testing.assert_array_equal(model.generate(PROMPT, max_new_tokens=STEPS, stop_at_eos=False),
                                  GOLDEN["generated_ids"])


def test_asyncio_forms(model):
    async def main():
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        out, ids = await asyncio.gather(model.forward_async(FORWARD_IN),
                                        model.generate_async(PROMPT, max_new_tokens=STEPS, stop_at_eos=False))
        done = True
        await t
        return out, ids, ticks

    out, ids, ticks = asyncio.run(main())
    assert_close_masked(out["logits"], GOLDEN["logits"], GOLDEN["attention_mask"])
    np.testing.assert_array_equal(ids, GOLDEN["generated_ids"])
    assert ticks > 0  # the event loop ran while the runtime worked


def test_gil_released_while_running():
    # One long native call (a batch of 64 x 60 tokens) on a thread while the main thread keeps
    # stamping the time. Were the GIL held across the call, no stamp could fall inside it.
    s = sw.Session.open(FIXTURE, cache_size=1, prefetch=0, plugin_dirs=[PLUGINS])
    big = {"input_ids": np.ones((64, 60), dtype=np.int64)}
    s.forward(big)
    window, errors = [], []
    finished = threading.Event()

    def work():
        try:
            t0 = time.perf_counter()
            s.forward(big)
            window.extend([t0, time.perf_counter()])
        except BaseException as e:
            errors.append(e)
        finally:
            finished.set()

    stamps = []
    th = threading.Thread(target=work)
    th.start()
    while not finished.is_set() and len(stamps) < 5_000_000:
        stamps.append(time.perf_counter())
    th.join(60)
    s.close()
    assert not errors, errors
    t0, t1 = window
    margin = 0.01  # the GIL's switch interval is 5 ms
    assert t1 - t0 > 4 * margin, f"the call took {t1 - t0:.3f} s: too short to tell"
    inside = sum(1 for t in stamps if t0 + margin < t < t1 - margin)
    assert inside > 100, f"{inside} stamps inside a {t1 - t0:.3f} s call"


def test_errors_carry_codes():
    with pytest.raises(sw.SurfError) as e:
        sw.Session.open("/nonexistent/model", plugin_dirs=[PLUGINS])
    assert e.value.code == "not_found" and e.value.code_value == 2
    assert "/nonexistent/model" in str(e.value)
    with pytest.raises(sw.SurfError) as e:
        sw.Session.open(FIXTURE, cache_size=0, plugin_dirs=[PLUGINS])
    assert e.value.code == "invalid_argument" and e.value.code_value == 1
    assert isinstance(e.value, RuntimeError)


def test_bad_inputs_and_closed_session():
    s = sw.Session.open(FIXTURE, plugin_dirs=[PLUGINS])
    with pytest.raises(sw.SurfError) as e:
        s.forward({"input_ids": np.zeros((1, 3), dtype=np.complex64)})
    assert e.value.code == "invalid_argument" and "input_ids" in str(e.value)
    with pytest.raises(sw.SurfError) as e:
        s.forward({"input_ids": np.array([[1, 100000]])})  # beyond the vocabulary
    assert e.value.code == "invalid_argument"
    with pytest.raises(sw.SurfError) as e:
        s.warmup(["no.such.component"])
    assert e.value.code == "not_found"
    with pytest.raises(ZeroDivisionError):  # a callback's exception reaches the caller
        s.generate(PROMPT, max_new_tokens=4, stop_at_eos=False, on_token=lambda *a: 1 / 0)
    with pytest.raises(sw.SurfError) as e:
        s.generate("some text", max_new_tokens=2)  # the fixture has no tokenizer files
    assert e.value.code == "not_found"
    s.close()
    with pytest.raises(sw.SurfError) as e:
        s.forward(FORWARD_IN)
    assert e.value.code == "invalid_argument" and "closed" in str(e.value)


def test_cache_stats_move_and_clear():
    with sw.Session.open(FIXTURE, cache_size=1, prefetch=0, plugin_dirs=[PLUGINS]) as s:
        st = s.cache_stats()
        assert st["fetches"] == 0 and st["bytes_fetched"] == 0
        s.forward(FORWARD_IN)
        st1 = s.cache_stats()
        assert st1["fetches"] > 0 and st1["misses"] > 0 and st1["bytes_fetched"] > 0 and st1["resident_bytes"] > 0
        s.clear_cache()
        st2 = s.cache_stats()
        assert st2["cached_bytes"] == 0 and st2["resident_bytes"] == 0 and st2["cached_components"] == 0
        s.warmup("all")
        st3 = s.cache_stats()
        assert st3["fetches"] > st2["fetches"] and st3["resident_bytes"] > 0
        s.reset_cache_stats()
        assert s.cache_stats()["fetches"] == 0


def rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def test_no_leak_over_1000_forwards(model):
    inputs = {"input_ids": GOLDEN["input_ids"][:1, :4].copy()}
    for _ in range(200):  # reach the steady state (cache, buffer pool, allocator arenas)
        model.forward(inputs)
    gc.collect()
    before = rss_kb()
    for _ in range(1000):
        out = model.forward(inputs)
        del out
    gc.collect()
    grown = rss_kb() - before
    # One forward's outputs are ~8 KB (logits [1, 4, 512] float32): a leak of them alone would
    # add ~8 MB over 1000 calls.
    assert grown < 2048, f"RSS grew by {grown} KB over 1000 forwards"


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """The llama fixture with the 512-id cut of llama3's tokenizer (tests/data/tokenizers)."""
    import gzip
    import shutil
    d = tmp_path_factory.mktemp("llama-text")
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(FIXTURE, f), d / f)
    data = os.path.join(os.path.dirname(FIXTURES), "data", "tokenizers", "tiny-bpe-512.tokenizer.json.gz")
    (d / "tokenizer.json").write_bytes(gzip.decompress(open(data, "rb").read()))
    s = sw.Session.open(str(d), plugin_dirs=[PLUGINS])
    yield s
    s.close()


def test_text_in_text_out(text_model):
    s = text_model
    assert s.has_tokenizer
    prompt = "The quick brown fox"
    text = s.generate(prompt, max_new_tokens=8, stop_at_eos=False)
    # The same generation from ids: its new ids decode to the same text.
    ids = s.encode(prompt)
    assert len(ids) > 1
    out = s.generate({"input_ids": np.array([ids])}, max_new_tokens=8, stop_at_eos=False)
    assert out.shape == (1, len(ids) + 8)
    assert text == s.decode(out[0, len(ids):])
    # Streamed pieces concatenate to the text; ids match.
    streamed = list(s.generate_iter(prompt, max_new_tokens=8, stop_at_eos=False))
    assert "".join(t.text for t in streamed) == text
    assert [t.id for t in streamed] == list(out[0, len(ids):])
    # A batch of prompts, each its own text.
    texts = s.generate([prompt, "Hello"], max_new_tokens=4, stop_at_eos=False)
    assert isinstance(texts, list) and len(texts) == 2


def test_connect_timeout_bounds_a_silent_server():
    """A listener on 127.0.0.1 that accepts and never answers: open fails with code 'timeout'
    after connect_timeout_ms, not after the retries' ~69 s."""
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except socket.timeout:
                pass

    t = threading.Thread(target=accept)
    t.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(sw.SurfError) as e:
            sw.Session.open(f"ws://127.0.0.1:{port}/m", connect_timeout_ms=1000, plugin_dirs=[PLUGINS])
        elapsed = time.monotonic() - t0
        assert e.value.code == "timeout", str(e.value)
        assert "connect timeout (1 s" in str(e.value)
        assert 0.9 < elapsed < 5, elapsed
        assert held, "the server accepted the connection"
        with pytest.raises(sw.SurfError) as e:
            sw.Session.open(f"ws://127.0.0.1:{port}/m", connect_timeout_ms=0, plugin_dirs=[PLUGINS])
        assert e.value.code == "invalid_argument"
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        listener.close()

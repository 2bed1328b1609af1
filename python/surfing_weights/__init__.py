"""Surfing Weights from Python: run transformer models whose weights stream on demand from a
weight server (ws://), a chunk store, S3 or a checkpoint directory into a bounded cache.

    import numpy as np, surfing_weights as sw
    with sw.Session.open("ws://127.0.0.1:8765/llama", cache_size=4, prefetch=2) as model:
        out = model.forward({"input_ids": np.array([[1, 15043, 3186]])})
        ids = model.generate({"input_ids": np.array([[1, 15043]])}, max_new_tokens=8)
        for tok in model.generate_iter({"input_ids": np.array([[1, 15043]])}, max_new_tokens=8):
            print(tok.id, tok.text)
        text = model.generate("Once upon a time", max_new_tokens=20)   # needs tokenizer files
        out = await model.forward_async({...})                           # from asyncio

Errors are SurfError with .code ("not_found", "invalid_argument", ...) and .code_value.
The runtime works without the GIL: other Python threads run meanwhile.
"""
import asyncio
import queue
import threading
from collections import namedtuple

from ._native import SurfError, _Session, __version__

__all__ = ["Session", "SurfError", "Token", "__version__"]

# One generated token: which sequence (row), its id, and its piece of text ("" without a tokenizer).
Token = namedtuple("Token", ["sequence", "id", "text"])

_DONE = object()


def _gen_args(max_new_tokens, stop_at_eos, eos_token_ids, stop_strings, do_sample, temperature, top_k, top_p,
              min_p, repetition_penalty, seed):
    return (int(max_new_tokens), bool(stop_at_eos), list(eos_token_ids or []), list(stop_strings or []),
            bool(do_sample), float(temperature), int(top_k), float(top_p), float(min_p), float(repetition_penalty),
            int(seed))


class Session:
    """A model opened from a SOURCE. Calls on one session run one at a time (the runtime
    serialises them); several sessions run in parallel."""

    def __init__(self, native):
        self._s = native

    @classmethod
    def open(cls, source, cache_size=2, prefetch=1, cache_bytes=0, plugin_dirs=(), warmup=(), spare_buffers=2,
             retry_attempts=6, request_timeout_ms=60000, connect_timeout_ms=30000):
        """Reads the source's manifest and finds the plugin; fetches no weights yet.
        connect_timeout_ms bounds reaching a ws[s]:// weight server (TCP connect, TLS, WebSocket
        upgrade, hello) over all attempts."""
        return cls(_Session.open(str(source), int(cache_size), int(prefetch), int(cache_bytes),
                                 [str(d) for d in plugin_dirs], list(warmup), int(spare_buffers),
                                 int(retry_attempts), int(request_timeout_ms), int(connect_timeout_ms)))

    # --- running ---

    def forward(self, inputs, hidden_states=False):
        """dict of numpy arrays (input_ids, attention_mask, ...) -> dict of numpy arrays. Inputs
        that are C-contiguous float32/float16/int64 are read in place; outputs are read-only
        arrays over the runtime's buffers (no copy; bf16 outputs become float32)."""
        return self._s.forward(dict(inputs), bool(hidden_states))

    def generate(self, inputs, max_new_tokens=32, stop_at_eos=True, eos_token_ids=None, stop_strings=None,
                 do_sample=False, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, seed=0,
                 on_token=None, return_dict=False):
        """inputs: a dict (input_ids [rows, len], attention_mask) -> generated_ids [rows, len + new]
        (the whole dict with return_dict: generated_lengths, generation_logits); or a prompt string
        (a list of them) -> the new text (a list), with the source's tokenizer.
        on_token(sequence, id, text) is called as each token is produced; returning False stops
        that sequence."""
        args = _gen_args(max_new_tokens, stop_at_eos, eos_token_ids, stop_strings, do_sample, temperature, top_k,
                         top_p, min_p, repetition_penalty, seed)
        if isinstance(inputs, (str, list, tuple)):
            prompts = [inputs] if isinstance(inputs, str) else list(inputs)
            texts, reasons, tensors = self._s.generate_text(prompts, *args, on_token)
            if return_dict:
                return dict(tensors, texts=texts, finish_reasons=reasons)
            return texts[0] if isinstance(inputs, str) else texts
        out = self._s.generate(dict(inputs), *args, on_token)
        return out if return_dict else out["generated_ids"]

    def generate_iter(self, inputs, max_new_tokens=32, **options):
        """Like generate, yielding Token(sequence, id, text) as each is produced. Leaving the loop
        early stops the generation."""
        q = queue.Queue()
        stop = threading.Event()
        user_cb = options.pop("on_token", None)

        def on_token(sequence, token_id, text):
            q.put(Token(sequence, token_id, text))
            if user_cb is not None and user_cb(sequence, token_id, text) is False:
                return False
            return not stop.is_set()

        def run():
            try:
                self.generate(inputs, max_new_tokens, on_token=on_token, **options)
                q.put(_DONE)
            except BaseException as e:  # handed to the consumer
                q.put(e)

        worker = threading.Thread(target=run, name="surf-generate", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()

    async def forward_async(self, inputs, hidden_states=False):
        """forward on a worker thread, awaitable from asyncio (the event loop keeps running)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: self.forward(inputs, hidden_states))

    async def generate_async(self, inputs, max_new_tokens=32, **options):
        """generate on a worker thread, awaitable from asyncio."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: self.generate(inputs, max_new_tokens, **options))

    # --- text ---

    @property
    def has_tokenizer(self):
        return self._s.has_tokenizer()

    def encode(self, text, add_special_tokens=True):
        return self._s.encode(text, add_special_tokens)

    def decode(self, ids, skip_special_tokens=True):
        return self._s.decode([int(i) for i in ids], skip_special_tokens)

    # --- the cache ---

    def warmup(self, components=("all",)):
        """Loads components now: ids, or "all"."""
        if isinstance(components, str):
            components = [components]
        self._s.warm_up(list(components))

    def clear_cache(self):
        """Drops every cached component; the next call fetches again."""
        self._s.clear_cache()

    def cache_stats(self):
        return self._s.cache_stats()

    def reset_cache_stats(self):
        self._s.reset_cache_stats()

    @property
    def info(self):
        return self._s.info()

    @property
    def model_type(self):
        return self._s.info()["model_type"]

    def close(self):
        """Waits for a running call, then frees the model. Further calls raise SurfError."""
        self._s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

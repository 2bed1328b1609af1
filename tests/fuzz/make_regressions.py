#!/usr/bin/python3
"""Writes the reproducer inputs of past findings (fuzzing and hand-built) into
tests/fuzz/regressions/<target>/. Run by hand with Debian's python3 (python3-msgpack,
python3-zstandard, python3-xxhash); the outputs are committed and replayed by the unit tests
(tests/unit/fuzz_regressions_test.cpp) and seed the fuzzers' corpora."""
import json, os, msgpack, xxhash, zstandard

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "regressions")


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(root, target, name), "wb") as f:
        f.write(data)


def chunk(data, raw_size, tensors, compression="none"):
    return msgpack.packb({
        "magic": "SURFCHNK", "format_version": 1, "component": "layers.0", "compression": compression,
        "raw_size": raw_size, "tensors": tensors, "data": data,
        "checksum": "xxh3:%016x" % xxhash.xxh3_64_intdigest(data)}, use_bin_type=True)


# A zstd frame that does not state its content size, with raw_size 2^64-1 (ZSTD_CONTENTSIZE_UNKNOWN):
# the buffer size rounding wrapped to 0 and ZSTD_decompress wrote past it.
frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * 4096)
write("chunk", "zstd-unknown-content-size", chunk(frame, 2**64 - 1, [], "zstd"))
# An array header declaring 2^32-1 elements: msgpack reserved ~96 GiB.
write("chunk", "array32-4g-elements", bytes([0xdd, 0xff, 0xff, 0xff, 0xff]))
# [2^62, 8] wrapped to 0 elements and was accepted with 0 bytes.
write("chunk", "shape-numel-overflow",
      chunk(b"", 0, [{"name": "w", "dtype": "F32", "shape": [2**62, 8], "offset": 0, "length": 0}]))
write("chunk", "negative-dimension",
      chunk(b"\0" * 64, 64, [{"name": "w", "dtype": "F32", "shape": [-4, -4], "offset": 0, "length": 64}]))
# 200k levels of nested arrays in a chunk header.
write("chunk", "deep-nesting", bytes([0x91]) * 200000 + bytes([0xc0]))

write("safetensors_header", "dims-above-2-63",
      json.dumps({"w": {"dtype": "F32", "shape": [2**64 - 1, 2**64 - 1], "data_offsets": [0, 4]}}))
write("safetensors_header", "shape-numel-overflow",
      json.dumps({"w": {"dtype": "F32", "shape": [2**62, 8], "data_offsets": [0, 0]}}))
write("safetensors_header", "overlapping-offsets",
      json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                  "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}))
write("safetensors_header", "deep-nesting",
      '{"w": {"dtype": "F32", "shape": ' + "[" * 100000 + "]" * 100000 + ', "data_offsets": [0, 4]}}')

component = {"id": "layers.0", "role": "streamed", "key": "chunks/layers.0.msgpack", "bytes": 100,
             "raw_bytes": 64, "checksum": "xxh3:0000000000000000",
             "tensors": [{"name": "w", "hf_name": "w", "dtype": "F32", "shape": [4, 4]}]}


def manifest(components, config=None):
    return json.dumps({"format": "surf-store", "format_version": 1, "architecture": "llama",
                       "model_type": "llama", "config": config if config is not None else {"model_type": "llama"},
                       "compression": "none", "dtype": "keep", "execution_order": [c["id"] for c in components],
                       "components": components})


write("manifest", "deep-nesting",
      manifest([component], {}).replace('"config": {}', '"config": ' + "[" * 100000 + "]" * 100000))
write("manifest", "float-bytes", manifest([dict(component, bytes=9.9e69, raw_bytes=9.9e69)]))
write("manifest", "duplicate-ids", manifest([component, component]))
write("manifest", "negative-shape",
      manifest([dict(component, tensors=[{"name": "w", "dtype": "F32", "shape": [-1, 4]}])]))

write("config", "deep-nesting", '{"model_type": "llama", "x": ' + "[" * 100000 + "]" * 100000 + "}")

# The wire protocol parses network input with the same limits: a 5-byte array header must not
# reserve 96 GiB on the server (a request) or the client (an answer), nor nesting exhaust the stack.
for target in ("wire_request", "wire_answer"):
    write(target, "array32-4g-elements", bytes([0xdd, 0xff, 0xff, 0xff, 0xff]))
    write(target, "deep-nesting", bytes([0x81, 0xa2]) + b"id" + bytes([0x91]) * 200000 + bytes([0xc0]))
# A map claiming 2^32-1 entries whose first key is "data" with a bin32 header claiming 4 GiB.
write("wire_answer", "data-header-only", bytes([0xdf, 0xff, 0xff, 0xff, 0xff, 0xa4]) + b"data" + bytes([0xc6, 0xff, 0xff, 0xff, 0xff]))

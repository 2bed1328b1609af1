// A host application embedding the runtime: opens a model from any SOURCE, runs one forward pass
// asynchronously while the host does other work, then greedy-generates and prints cache statistics.
//
//   host_app SOURCE INPUTS.safetensors [--plugin-dir DIR]
#include <surf/runtime.h>

#include <iostream>

#include "surf/storage/safetensors.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: host_app SOURCE INPUTS.safetensors [--plugin-dir DIR]\n";
    return 2;
  }
  try {
    surf::OpenOptions options;
    options.cache_size = 2;
    options.prefetch = 1;
    if (argc >= 5 && std::string(argv[3]) == "--plugin-dir") options.plugin_dirs.push_back(argv[4]);
    auto session = surf::Session::open(argv[1], options);
    const surf::TensorMap all = surf::read_safetensors(argv[2]);
    surf::TensorMap inputs{{"input_ids", all.at("input_ids")}};
    auto pending = session->forward_async(inputs);
    std::cout << "model " << session->info().model_type << " via " << session->info().plugin << "\n";
    const surf::TensorMap out = pending.get();
    for (const auto& [name, t] : out) std::cout << name << " " << surf::shape_string(t.shape()) << "\n";
    if (session->info().model_type != "bert") {
      const surf::TensorMap gen = session->generate(inputs, 4);
      std::cout << "generated_ids " << surf::shape_string(gen.at("generated_ids").shape()) << "\n";
    }
    std::cout << session->cache_stats().to_text() << "\n";
  } catch (const surf::Error& e) {
    std::cerr << "host_app: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

// A host application embedding the runtime: opens a model from any SOURCE, runs one forward pass
// asynchronously while the host does other work, then greedy-generates (streaming the tokens)
// and prints cache statistics.
//
//   host_app SOURCE INPUTS.safetensors [--plugin-dir DIR] [--output OUT.safetensors] [--steps N]
//
// INPUTS holds input_ids (and attention_mask, position_ids, token_type_ids); gen_input_ids, if
// present, is the generation prompt (else input_ids). OUT receives the forward pass's outputs and
// generated_ids / generation_logits. Built against the installed runtime alone:
//   c++ host_app.cpp $(pkg-config --cflags --libs surf-runtime) -o host_app
#include <surf/runtime.h>

#include <cstdlib>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: host_app SOURCE INPUTS.safetensors [--plugin-dir DIR] [--output OUT] [--steps N]\n";
    return 2;
  }
  std::string output;
  int64_t steps = 4;
  surf::OpenOptions options;
  options.cache_size = 2;
  options.prefetch = 1;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::cerr << "host_app: " << a << " needs a value\n";
      return 2;
    }
    if (a == "--plugin-dir") {
      options.plugin_dirs.push_back(argv[++i]);
    } else if (a == "--output") {
      output = argv[++i];
    } else if (a == "--steps") {
      steps = std::atoll(argv[++i]);
    } else {
      std::cerr << "host_app: unknown option " << a << "\n";
      return 2;
    }
  }
  try {
    auto session = surf::Session::open(argv[1], options);
    const surf::TensorMap all = surf::load_safetensors(argv[2]);
    surf::TensorMap inputs;
    for (const char* k : {"input_ids", "attention_mask", "position_ids", "token_type_ids"}) {
      if (all.count(k)) inputs[k] = all.at(k);
    }
    auto pending = session->forward_async(inputs);
    std::cout << "model " << session->info().model_type << " via " << session->info().plugin << "\n";
    surf::TensorMap out = pending.get();
    for (const auto& [name, t] : out) std::cout << name << " " << surf::shape_string(t.shape()) << "\n";
    if (session->info().model_type != "bert") {
      surf::TensorMap prompt{{"input_ids", all.count("gen_input_ids") ? all.at("gen_input_ids") : all.at("input_ids")}};
      surf::GenerateOptions g;
      g.max_new_tokens = steps;
      g.stop_at_eos = false;
      std::cout << "tokens";
      g.on_token = [](int64_t, int64_t id, std::string_view) {
        std::cout << " " << id << std::flush;
        return true;
      };
      surf::TensorMap gen = session->generate(prompt, g);
      std::cout << "\ngenerated_ids " << surf::shape_string(gen.at("generated_ids").shape()) << "\n";
      out["generated_ids"] = gen.at("generated_ids");
      out["generation_logits"] = gen.at("generation_logits");
    }
    std::cout << session->cache_stats().to_text() << "\n";
    if (!output.empty()) surf::save_safetensors(output, out);
  } catch (const surf::Error& e) {
    std::cerr << "host_app: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

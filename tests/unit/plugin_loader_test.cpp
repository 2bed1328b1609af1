#include <gtest/gtest.h>

#include <algorithm>

#include "../test_util.h"
#include "plugins/plugin_registry.h"

using namespace surf;

namespace {
const PluginLoadResult* result_for(const std::vector<PluginLoadResult>& rs, const std::string& file_part) {
  for (const auto& r : rs) {
    if (r.path.find(file_part) != std::string::npos) return &r;
  }
  return nullptr;
}
}  // namespace

TEST(PluginLoader, TypedResultsForEveryFile) {
  PluginRegistry reg({test::loader_plugin_dir()});
  const auto& rs = reg.results();
  auto expect = [&](const std::string& file, PluginLoadStatus status, const std::string& text) {
    const PluginLoadResult* r = result_for(rs, file);
    ASSERT_NE(r, nullptr) << file;
    EXPECT_EQ(r->status, status) << file << ": " << r->message;
    EXPECT_NE(r->message.find(text), std::string::npos) << file << ": " << r->message;
  };
  expect("libtest-good.so", PluginLoadStatus::loaded, "");
  expect("libtest-wrong_abi.so", PluginLoadStatus::wrong_abi,
         "built for SDK ABI " + std::to_string(SURF_ABI_MAJOR + 1) + ".0, this runtime supports ABI " +
             std::to_string(SURF_ABI_MAJOR) + "." + std::to_string(SURF_ABI_MINOR));
  expect("libtest-newer_minor.so", PluginLoadStatus::wrong_abi, "plugin is newer");
  expect("libtest-missing_entry.so", PluginLoadStatus::missing_entry_point, "surf_plugin_entry");
  expect("libtest-garbage.so", PluginLoadStatus::open_failed, "cannot load");
  expect("libtest-throwing.so", PluginLoadStatus::loaded, "");
}

TEST(PluginLoader, GoodPluginRunsThroughTheBoundary) {
  PluginRegistry reg({test::loader_plugin_dir()});
  auto plugin = reg.find("surf-test-echo");
  EXPECT_EQ(plugin->name(), "test-good");
  EXPECT_EQ(plugin->version(), "1.2.3");
  ModelConfig cfg = ModelConfig::parse("{}");
  ComponentPlan plan = plugin->plan(cfg);
  ASSERT_EQ(plan.components.size(), 1u);
  EXPECT_EQ(plan.components[0].id, "bias");
  auto model = plugin->create_model(cfg);

  struct OneBias final : ComponentSource {
    ComponentRef acquire(const std::string& id) override {
      if (id != "bias") fail(ErrorCode::not_found, "no " + id);
      struct C final : Component {
        std::string name = "bias";
        Tensor v = Tensor::from_f32({1}, {0.5f});
        const std::string& id() const override { return name; }
        const Tensor* find(std::string_view n) const override { return n == "value" ? &v : nullptr; }
      };
      return std::make_shared<C>();
    }
  } src;
  TensorMap in{{"input_ids", Tensor::from_i64({2}, {1, 2})}}, out;
  model->forward(in, {}, src, out);
  EXPECT_EQ(out["echo"].f32()[1], 2.5f);
  // An error thrown inside the plugin comes back as a typed error, not a crash.
  TensorMap none;
  test::expect_error([&] { model->forward(none, {}, src, out); }, ErrorCode::invalid_argument,
                     "missing input 'input_ids'");
  test::expect_error([&] { model->generate(in, {}, src, out); }, ErrorCode::unsupported, "");
}

TEST(PluginLoader, ThrowingCreateBecomesAnError) {
  PluginRegistry reg({test::loader_plugin_dir()});
  auto plugin = reg.find("surf-test-throwing");
  test::expect_error([&] { plugin->create_model(ModelConfig::parse("{}")); }, ErrorCode::internal, "boom from create");
  test::expect_error([&] { plugin->plan(ModelConfig::parse(R"({"throw_in_plan": true})")); }, ErrorCode::internal,
                     "boom from plan");
}

TEST(PluginLoader, UnknownModelTypeNamesWhatWasSearched) {
  PluginRegistry reg({test::loader_plugin_dir()});
  const std::string m =
      test::expect_error([&] { reg.find("mamba"); }, ErrorCode::not_found, "no plugin serves model_type 'mamba'");
  EXPECT_NE(m.find("surf-test-echo"), std::string::npos) << m;
  EXPECT_NE(m.find(test::loader_plugin_dir()), std::string::npos) << m;
}

TEST(PluginLoader, ExplicitDirectoryComesFirstInTheSearchPath) {
  auto dirs = plugin_search_path({"/first"});
  ASSERT_FALSE(dirs.empty());
  EXPECT_EQ(dirs.front(), "/first");
  // The build tree next to the test binary is found without configuration, last. (Matching any
  // ".../plugins" would also match the install dir, which is always on the path.)
  EXPECT_EQ(dirs.back(), test::plugin_dir());
  EXPECT_EQ(std::count(dirs.begin(), dirs.end(), test::plugin_dir()), 1);
}

#include <gtest/gtest.h>

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
  try {
    model->forward(none, {}, src, out);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("missing input 'input_ids'"), std::string::npos) << e.what();
  }
  try {
    model->generate(in, {}, src, out);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
  }
}

TEST(PluginLoader, ThrowingCreateBecomesAnError) {
  PluginRegistry reg({test::loader_plugin_dir()});
  auto plugin = reg.find("surf-test-throwing");
  try {
    plugin->create_model(ModelConfig::parse("{}"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("boom from create"), std::string::npos) << e.what();
  }
  try {
    plugin->plan(ModelConfig::parse(R"({"throw_in_plan": true})"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("boom from plan"), std::string::npos) << e.what();
  }
}

TEST(PluginLoader, UnknownModelTypeNamesWhatWasSearched) {
  PluginRegistry reg({test::loader_plugin_dir()});
  try {
    reg.find("mamba");
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(e.code(), ErrorCode::not_found);
    EXPECT_NE(m.find("no plugin serves model_type 'mamba'"), std::string::npos) << m;
    EXPECT_NE(m.find("surf-test-echo"), std::string::npos) << m;
    EXPECT_NE(m.find(test::loader_plugin_dir()), std::string::npos) << m;
  }
}

TEST(PluginLoader, ExplicitDirectoryComesFirstInTheSearchPath) {
  auto dirs = plugin_search_path({"/first"});
  ASSERT_FALSE(dirs.empty());
  EXPECT_EQ(dirs.front(), "/first");
  // The build tree next to the test binary is found without configuration.
  bool has_build_tree = false;
  for (const auto& d : dirs) has_build_tree |= d.find("/plugins") != std::string::npos && d != "/first";
  EXPECT_TRUE(has_build_tree);
}

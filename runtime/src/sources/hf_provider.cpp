// Components read in place from a HuggingFace checkpoint's safetensors files, by the plugin's plan.
#include <map>

#include "sources/component_provider.h"
#include "surf/log.h"
#include "surf/storage/safetensors.h"

namespace surf {

namespace {

class HfProvider final : public ComponentProvider {
 public:
  HfProvider(std::shared_ptr<HfCheckpoint> ck, const ComponentPlan& plan, const std::string& model_type,
             const std::string& plugin_name, std::shared_ptr<BufferPool> pool)
      : ck_(std::move(ck)), plan_(plan), pool_(std::move(pool)) {
    manifest_.architecture = plugin_name;
    manifest_.model_type = model_type;
    manifest_.config_json = ck_->config_json();
    manifest_.execution_order = plan_.execution_order;
    for (auto& rc : resolve_plan(plan_, *ck_)) {
      ManifestComponent mc;
      mc.id = rc.spec->id;
      mc.role = rc.spec->role;
      mc.key = "(in place)";
      for (const auto& t : rc.tensors) {
        auto loc = ck_->find(t.hf_name);
        mc.tensors.push_back({t.name, t.hf_name, loc.info->dtype, loc.info->shape});
        mc.raw_bytes += loc.info->length;
      }
      mc.bytes = mc.raw_bytes;
      manifest_.components.push_back(std::move(mc));
    }
  }

  const Manifest& manifest() const override { return manifest_; }
  std::string describe() const override { return "hf:" + ck_->dir().string(); }

  FetchResult fetch(const std::string& id) override {
    const ManifestComponent* c = manifest_.find(id);
    if (c == nullptr) fail(ErrorCode::not_found, "component '" + id + "' is not part of the model");
    size_t total = 0;
    for (const auto& t : c->tensors) total += (ck_->find(t.hf_name).info->length + 63) / 64 * 64;
    auto buf = pool_->acquire(total);
    std::vector<RawTensor> raw;
    size_t at = 0;
    for (const auto& t : c->tensors) {
      auto loc = ck_->find(t.hf_name);
      loc.file->read(*loc.info, buf->data() + at);
      raw.push_back({t.name, loc.info->dtype, loc.info->shape, buf->data() + at, loc.info->length});
      at += (loc.info->length + 63) / 64 * 64;
    }
    FetchResult r;
    r.component = materialize(id, raw, buf, buf->capacity(), *pool_);
    r.bytes_fetched = c->raw_bytes;
    return r;
  }

 private:
  std::shared_ptr<HfCheckpoint> ck_;
  ComponentPlan plan_;
  std::shared_ptr<BufferPool> pool_;
  Manifest manifest_;
};

}  // namespace

std::vector<ResolvedComponent> resolve_plan(const ComponentPlan& plan, const HfCheckpoint& ck) {
  std::vector<ResolvedComponent> out;
  std::map<std::string, bool> claimed;
  for (const auto& spec : plan.components) {
    validate_component_id(spec.id);
    ResolvedComponent rc{&spec, {}};
    for (const auto& t : spec.tensors) {
      std::string found;
      for (const auto& cand : t.sources) {
        if (ck.find(cand).file != nullptr) {
          found = cand;
          break;
        }
      }
      if (found.empty()) {
        for (const auto& cand : t.sources) {
          if (auto s = ck.skipped().find(cand); s != ck.skipped().end()) {
            fail(ErrorCode::unsupported, "checkpoint " + ck.dir().string() + ": tensor '" + cand + "' is stored as " +
                                             s->second + ", which cannot be loaded (component '" + spec.id + "')");
          }
        }
        if (!t.required) continue;
        std::string names;
        for (const auto& cand : t.sources) names += (names.empty() ? "'" : " or '") + cand + "'";
        fail(ErrorCode::not_found, "checkpoint " + ck.dir().string() + " lacks tensor " + names + " (component '" +
                                       spec.id + "', tensor '" + t.name + "')");
      }
      claimed[found] = true;
      rc.tensors.push_back({t.name, found});
    }
    out.push_back(std::move(rc));
  }
  std::vector<std::string> unclaimed;
  for (const auto& name : ck.tensor_names()) {
    if (claimed.count(name)) continue;
    bool ignored = false;
    for (const auto& s : plan.ignored_suffixes) {
      if (name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) ignored = true;
    }
    for (const auto& p : plan.ignored_prefixes) {
      if (name.rfind(p, 0) == 0) ignored = true;
    }
    if (!ignored) unclaimed.push_back(name);
  }
  if (!unclaimed.empty()) {
    std::string list;
    for (size_t i = 0; i < unclaimed.size() && i < 5; ++i) list += (i ? ", " : "") + unclaimed[i];
    log_warn(std::to_string(unclaimed.size()) + " checkpoint tensor(s) not used by the model: " + list +
             (unclaimed.size() > 5 ? ", ..." : ""));
  }
  return out;
}

std::unique_ptr<ComponentProvider> make_hf_provider(std::shared_ptr<HfCheckpoint> ck, const ComponentPlan& plan,
                                                    const std::string& model_type, const std::string& plugin_name,
                                                    std::shared_ptr<BufferPool> pool) {
  return std::make_unique<HfProvider>(std::move(ck), plan, model_type, plugin_name, std::move(pool));
}

}  // namespace surf

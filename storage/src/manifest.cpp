#include "surf/storage/manifest.h"

#include <nlohmann/json.hpp>

#include "surf/storage/json.h"

using nlohmann::json;

namespace surf {

bool is_valid_component_id(std::string_view id) {
  if (id.empty() || id.size() > 200 || id.find("..") != std::string_view::npos || id == ".") return false;
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  }
  return true;
}

void validate_component_id(const std::string& id) {
  if (!is_valid_component_id(id)) {
    fail(ErrorCode::invalid_argument,
         "invalid component name '" + id + "': only [A-Za-z0-9_.-] allowed, no '..' or '/'");
  }
}

std::string chunk_key(const std::string& id) {
  validate_component_id(id);
  return "chunks/" + id + ".msgpack";
}

std::string file_key(const std::string& name) {
  validate_component_id(name);
  return "files/" + name;
}

const ManifestFile* Manifest::find_file(const std::string& name) const {
  for (const auto& f : files) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

const ManifestComponent* Manifest::find(const std::string& id) const {
  for (const auto& c : components) {
    if (c.id == id) return &c;
  }
  return nullptr;
}

std::string Manifest::to_json() const {
  json j;
  j["format"] = "surf-store";
  bool quantized = false;
  for (const auto& c : components) {
    for (const auto& t : c.tensors) quantized = quantized || is_quantized(t.dtype);
  }
  j["format_version"] = quantized ? kManifestFormatVersion : kManifestFormatVersionUnquantized;
  j["architecture"] = architecture;
  j["model_type"] = model_type;
  j["config"] = json::parse(config_json);
  j["compression"] = compression;
  j["dtype"] = dtype;
  j["execution_order"] = execution_order;
  json comps = json::array();
  for (const auto& c : components) {
    json tensors = json::array();
    for (const auto& t : c.tensors) {
      tensors.push_back({{"name", t.name}, {"hf_name", t.hf_name}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}});
    }
    comps.push_back({{"id", c.id},
                     {"role", c.role == ComponentRole::resident ? "resident" : "streamed"},
                     {"key", c.key},
                     {"bytes", c.bytes},
                     {"raw_bytes", c.raw_bytes},
                     {"checksum", c.checksum},
                     {"tensors", tensors}});
  }
  j["components"] = comps;
  if (!files.empty()) {
    json fl = json::array();
    for (const auto& f : files) fl.push_back({{"name", f.name}, {"bytes", f.bytes}, {"checksum", f.checksum}});
    j["files"] = fl;
  }
  return j.dump(1);
}

Manifest Manifest::from_json(const std::string& text) {
  Manifest m;
  try {
    const json j = parse_json(text, "manifest.json");
    if (j.value("format", "") != "surf-store") fail(ErrorCode::corrupt, "manifest.json is not a surf store manifest");
    const uint64_t version = json_uint(j.at("format_version"), "manifest: format_version");
    m.format_version = version > 1000000 ? 1000000 : static_cast<int>(version);  // any such is "newer"
    if (m.format_version > kManifestFormatVersion) {
      fail(ErrorCode::unsupported, "store format version " + std::to_string(m.format_version) +
                                       " is newer than this runtime's " + std::to_string(kManifestFormatVersion) +
                                       ": upgrade the runtime");
    }
    m.architecture = j.at("architecture").get<std::string>();
    m.model_type = j.at("model_type").get<std::string>();
    m.config_json = j.at("config").dump();
    m.compression = j.value("compression", "none");
    m.dtype = j.value("dtype", "keep");
    m.execution_order = j.at("execution_order").get<std::vector<std::string>>();
    for (const auto& c : j.at("components")) {
      ManifestComponent mc;
      mc.id = c.at("id").get<std::string>();
      validate_component_id(mc.id);
      mc.role = c.at("role").get<std::string>() == "resident" ? ComponentRole::resident : ComponentRole::streamed;
      mc.key = c.at("key").get<std::string>();
      if (mc.key != chunk_key(mc.id))
        fail(ErrorCode::corrupt, "manifest: component '" + mc.id + "' has key '" + mc.key + "'");
      mc.bytes = json_uint(c.at("bytes"), "manifest: component '" + mc.id + "' bytes");
      mc.raw_bytes = c.contains("raw_bytes") ? json_uint(c["raw_bytes"], "manifest: raw_bytes") : 0;
      mc.checksum = c.at("checksum").get<std::string>();
      for (const auto& t : c.at("tensors")) {
        ManifestTensor mt;
        mt.name = t.at("name").get<std::string>();
        mt.hf_name = t.value("hf_name", "");
        mt.dtype = dtype_from_name(t.at("dtype").get<std::string>());
        for (const auto& d : t.at("shape"))
          mt.shape.push_back(static_cast<int64_t>(json_uint(d, "manifest: a dimension")));
        try {
          shape_bytes(mt.shape, mt.dtype);
        } catch (const Error& e) {
          fail(ErrorCode::corrupt, "manifest: component '" + mc.id + "' tensor '" + mt.name + "': " + e.what());
        }
        mc.tensors.push_back(std::move(mt));
      }
      if (m.find(mc.id)) fail(ErrorCode::corrupt, "manifest: component '" + mc.id + "' is listed twice");
      m.components.push_back(std::move(mc));
    }
    if (j.contains("files")) {
      for (const auto& f : j.at("files")) {
        ManifestFile mf;
        mf.name = f.at("name").get<std::string>();
        if (!is_valid_component_id(mf.name))
          fail(ErrorCode::corrupt, "manifest: file name '" + mf.name + "' is not allowed");
        mf.bytes = json_uint(f.at("bytes"), "manifest: file '" + mf.name + "' bytes");
        mf.checksum = f.at("checksum").get<std::string>();
        m.files.push_back(std::move(mf));
      }
    }
  } catch (const json::exception& e) {
    fail(ErrorCode::corrupt, std::string("manifest.json is malformed: ") + e.what());
  }
  for (const auto& id : m.execution_order) {
    if (!m.find(id)) fail(ErrorCode::corrupt, "manifest: execution order names unknown component '" + id + "'");
  }
  return m;
}

}  // namespace surf

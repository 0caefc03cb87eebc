// Model files: the safetensors layout (8-byte little-endian header length, a JSON header,
// raw little-endian tensor data). Tensors: every parameter under its own name and the
// recurrent state as "state.<node>". Metadata (strings, as the format requires): the IR,
// batch size, learning rate, dtype and a format version. Everything read is validated
// before a model is touched; a save goes to a temporary file renamed over the target.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "neuromorph/engine.h"

namespace nm {
namespace {

using json = nlohmann::json;
constexpr const char* kFormat = "neuromorph-model";
constexpr int kFormatVersion = 1;
constexpr uint64_t kMaxHeader = 100u << 20;
static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE float sizes assumed");

bool little_endian() {
  const uint16_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

struct Entry {
  const ParamInfo* info;
  bool state;
};

std::vector<Entry> entries(const ModelBase& m) {
  std::vector<Entry> out;
  for (const auto& p : m.params()) out.push_back({&p, false});
  for (const auto& p : m.state_tensors()) out.push_back({&p, true});
  return out;
}

std::string number(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

const char* const kKinds[] = {"sgd", "momentum", "adam", "adamw"};
const char* const kScheds[] = {"constant", "step", "cosine"};

json optim_json(const OptimConfig& c) {
  return {{"optimizer", kKinds[c.kind]}, {"momentum", c.momentum}, {"beta1", c.beta1},
          {"beta2", c.beta2}, {"eps", c.eps}, {"weight_decay", c.weight_decay},
          {"grad_clip", c.grad_clip}, {"schedule", kScheds[c.schedule]}, {"warmup", c.warmup},
          {"step_size", c.step_size}, {"gamma", c.gamma}, {"total_steps", c.total_steps},
          {"min_lr", c.min_lr}};
}

OptimConfig optim_from(const json& j, const std::string& path) {
  OptimConfig c;
  try {
    auto pick = [&](const char* key, const char* const* names, int n) {
      std::string v = j.at(key).get<std::string>();
      for (int i = 0; i < n; ++i)
        if (v == names[i]) return i;
      throw FileError(path + ": unknown " + key + " '" + v + "'");
    };
    c.kind = OptimConfig::Kind(pick("optimizer", kKinds, 4));
    c.schedule = OptimConfig::Sched(pick("schedule", kScheds, 3));
    c.momentum = j.at("momentum"); c.beta1 = j.at("beta1"); c.beta2 = j.at("beta2");
    c.eps = j.at("eps"); c.weight_decay = j.at("weight_decay"); c.grad_clip = j.at("grad_clip");
    c.warmup = j.at("warmup"); c.step_size = j.at("step_size"); c.gamma = j.at("gamma");
    c.total_steps = j.at("total_steps"); c.min_lr = j.at("min_lr");
  } catch (const json::exception&) {
    throw FileError(path + ": the optimizer settings are malformed");
  }
  return c;
}

}  // namespace

void save_model(const ModelBase& m, const std::string& path,
                const std::vector<std::pair<std::string, std::string>>& metadata) {
  if (!m.built()) throw StateError("model is not built: nothing to save");
  if (!little_endian()) throw FileError("saving needs a little-endian machine");
  const size_t esize = m.dtype() == DType::F64 ? 8 : 4;
  json header;
  json meta = {{"format", kFormat},
               {"format_version", std::to_string(kFormatVersion)},
               {"ir", m.ir_json()},
               {"batch_size", std::to_string(m.batch_size())},
               {"learning_rate", number(m.learning_rate())},
               {"dtype", m.dtype() == DType::F64 ? "float64" : "float32"},
               {"optimizer", optim_json(m.optimizer()).dump()},
               {"steps", std::to_string(m.steps())}};
  for (const auto& kv : metadata) meta[kv.first] = kv.second;
  header["__metadata__"] = meta;
  size_t offset = 0;
  const auto list = entries(m);
  for (const auto& e : list) {
    header[e.info->name] = {{"dtype", esize == 8 ? "F64" : "F32"},
                            {"shape", e.info->shape},
                            {"data_offsets", {offset, offset + e.info->size * esize}}};
    offset += e.info->size * esize;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  std::vector<char> data(offset);
  offset = 0;
  for (const auto& e : list) {
    if (e.state) m.get_state(e.info->name, data.data() + offset);
    else m.get_param(e.info->name, data.data() + offset);
    offset += e.info->size * esize;
  }
  const std::string tmp = path + ".tmp-nm";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw FileError("cannot write " + tmp);
    uint64_t n = text.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f.write(text.data(), std::streamsize(text.size()));
    f.write(data.data(), std::streamsize(data.size()));
    f.flush();
    if (!f) {
      std::remove(tmp.c_str());
      throw FileError("writing " + tmp + " failed (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw FileError("cannot replace " + path);
  }
}

namespace {

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw FileError("cannot open " + path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string meta_str(const json& meta, const char* key, const std::string& path) {
  if (!meta.contains(key) || !meta[key].is_string())
    throw FileError(path + ": metadata lacks '" + key + "'");
  return meta[key].get<std::string>();
}

void check_entry(const json& h, const ParamInfo& p, size_t esize, size_t data_size,
                 const std::string& path) {
  if (!h.contains(p.name)) throw FileError(path + ": tensor '" + p.name + "' is missing");
  const json& t = h[p.name];
  const char* want = esize == 8 ? "F64" : "F32";
  if (!t.is_object() || t.value("dtype", "") != want)
    throw FileError(path + ": tensor '" + p.name + "' must be " + want);
  if (t.value("shape", json::array()) != json(p.shape))
    throw FileError(path + ": tensor '" + p.name + "' has shape " + t["shape"].dump() +
                    ", the model needs " + json(p.shape).dump());
  const json& off = t.value("data_offsets", json::array());
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
      !off[1].is_number_unsigned())
    throw FileError(path + ": tensor '" + p.name + "' has no valid data_offsets");
  uint64_t b = off[0], e = off[1];
  if (e < b || e > data_size || e - b != p.size * esize)
    throw FileError(path + ": tensor '" + p.name + "' lies outside the data or has the wrong size");
}

}  // namespace

std::unique_ptr<ModelBase> load_model(const std::string& path) {
  if (!little_endian()) throw FileError("loading needs a little-endian machine");
  const std::string bytes = read_all(path);
  if (bytes.size() < 8) throw FileError(path + ": too short to be a model file");
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  if (n > kMaxHeader || n > bytes.size() - 8)
    throw FileError(path + ": header length " + std::to_string(n) + " does not fit the file "
                    "(truncated or not a model file)");
  json h;
  try {
    h = json::parse(bytes.substr(8, n));
  } catch (const json::exception&) {
    throw FileError(path + ": the header is not valid JSON (corrupt file?)");
  }
  if (!h.is_object() || !h.contains("__metadata__") || !h["__metadata__"].is_object())
    throw FileError(path + ": not a Neuromorph model file (no metadata)");
  const json& meta = h["__metadata__"];
  if (meta_str(meta, "format", path) != kFormat)
    throw FileError(path + ": not a Neuromorph model file");
  if (meta_str(meta, "format_version", path) != std::to_string(kFormatVersion))
    throw FileError(path + ": model file version " + meta_str(meta, "format_version", path) +
                    " is not supported (this engine reads version " +
                    std::to_string(kFormatVersion) + ")");
  int batch;
  double lr;
  long steps;
  try {
    batch = std::stoi(meta_str(meta, "batch_size", path));
    lr = std::stod(meta_str(meta, "learning_rate", path));
    steps = std::stol(meta_str(meta, "steps", path));
  } catch (const std::logic_error&) {
    throw FileError(path + ": batch_size, learning_rate or steps is not a number");
  }
  json oj;
  try {
    oj = json::parse(meta_str(meta, "optimizer", path));
  } catch (const json::exception&) {
    throw FileError(path + ": the optimizer settings are not valid JSON");
  }
  const OptimConfig opt = optim_from(oj, path);
  const std::string dt = meta_str(meta, "dtype", path);
  if (dt != "float32" && dt != "float64") throw FileError(path + ": unknown dtype '" + dt + "'");
  std::unique_ptr<ModelBase> m;
  try {
    m = make_model(meta_str(meta, "ir", path), batch, lr, dt == "float64" ? DType::F64 : DType::F32,
                   opt);
  } catch (const Error& e) {
    throw FileError(path + ": the stored model is invalid: " + e.what());
  }
  const size_t esize = dt == "float64" ? 8 : 4;
  const char* data = bytes.data() + 8 + n;
  const size_t data_size = bytes.size() - 8 - n;
  const auto list = entries(*m);
  for (const auto& e : list) check_entry(h, *e.info, esize, data_size, path);
  for (const auto& e : list) {
    const char* src = data + h[e.info->name]["data_offsets"][0].get<uint64_t>();
    for (size_t i = 0; i < e.info->size; ++i) {
      double v;
      if (esize == 8) std::memcpy(&v, src + i * 8, 8);
      else { float f; std::memcpy(&f, src + i * 4, 4); v = f; }
      if (!std::isfinite(v)) throw FileError(path + ": tensor '" + e.info->name + "' holds NaN or inf");
    }
  }
  m->build(0);  // allocate; every value below is overwritten
  for (const auto& e : list) {
    const char* src = data + h[e.info->name]["data_offsets"][0].get<uint64_t>();
    if (e.state) m->set_state(e.info->name, src);
    else m->set_param(e.info->name, src);
  }
  m->set_steps(steps);
  return m;
}

}  // namespace nm

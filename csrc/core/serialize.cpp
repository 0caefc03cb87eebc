// Model files: the safetensors layout (8-byte little-endian header length, a JSON header,
// raw little-endian tensor data). Tensors: every parameter under its own name and the
// recurrent state as "state.<node>". Metadata (strings, as the format requires): the IR,
// batch size, learning rate, dtype, a format version and (version 2) a CRC-32C of the whole
// file. Everything read is validated (checksum, strict numbers, tensors tiling the data
// exactly) into a fresh model; no existing model is touched. A save writes a uniquely named
// temporary file in the target's directory, fsyncs it, renames it over the target and
// fsyncs the directory, so readers see the old file or the new one, never a torn one.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "neuromorph/engine.h"

namespace nm {
namespace {

using json = nlohmann::json;
constexpr const char* kFormat = "neuromorph-model";
constexpr int kFormatVersion = 2;   // 2: the file carries a CRC-32C; version 1 files still load
constexpr const char* kCrcKey = "neuromorph_crc32c";
constexpr const char* kCrcPlaceholder = "00000000";
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

// Shortest text that reads back to v (17 significant digits). snprintf, not an ostream: the
// engine formats no numbers through iostreams, whose locale machinery breaks when a toolchain
// links libstdc++ statically into the engine and the host process loads another copy.
std::string number(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven, 8 bytes per step.
struct Crc32c {
  uint32_t t[8][256];
  Crc32c() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  }
  uint32_t update(uint32_t crc, const void* data, size_t n) const {
    const auto* p = static_cast<const unsigned char*>(data);
    crc = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
      uint32_t lo, hi;
      std::memcpy(&lo, p, 4);
      std::memcpy(&hi, p + 4, 4);
      lo ^= crc;
      crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
            t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    }
    while (n--) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
    return ~crc;
  }
};
const Crc32c& crc_table() {
  static const Crc32c table;
  return table;
}

std::string hex8(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
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
    for (const char* key : {"momentum", "beta1", "beta2", "eps", "weight_decay", "grad_clip",
                            "gamma", "min_lr", "warmup", "step_size", "total_steps"})
      if (!j.at(key).is_number()) throw json::type_error::create(302, "not a number", &j);
  } catch (const json::exception&) {
    throw FileError(path + ": the optimizer settings are malformed");
  }
  auto bad = [&](const char* what) {
    throw FileError(path + ": the optimizer setting " + what + " is out of range");
  };
  auto finite = [](double v) { return std::isfinite(v); };
  if (!(finite(c.momentum) && c.momentum >= 0 && c.momentum < 1)) bad("momentum");
  if (!(finite(c.beta1) && c.beta1 >= 0 && c.beta1 < 1)) bad("beta1");
  if (!(finite(c.beta2) && c.beta2 >= 0 && c.beta2 < 1)) bad("beta2");
  if (!(finite(c.eps) && c.eps > 0)) bad("eps");
  if (!(finite(c.weight_decay) && c.weight_decay >= 0)) bad("weight_decay");
  if (!(finite(c.grad_clip) && c.grad_clip >= 0)) bad("grad_clip");
  if (!(finite(c.gamma) && c.gamma > 0)) bad("gamma");
  if (!(finite(c.min_lr) && c.min_lr >= 0)) bad("min_lr");
  if (c.warmup < 0) bad("warmup");
  if (c.step_size < 1) bad("step_size");
  if (c.total_steps < 1) bad("total_steps");
  return c;
}

// The temporary files of a target: "<name>.tmp-nm-<pid>-<counter>" in the same directory.
std::string temp_prefix(const std::string& path) { return path + ".tmp-nm-"; }

// Removes temporary files a killed writer left for this target (their pid is gone).
void clean_stale_temps(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash ? slash : 1);
  const std::string base = (slash == std::string::npos ? path : path.substr(slash + 1)) + ".tmp-nm-";
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  while (dirent* ent = readdir(d)) {
    const std::string name = ent->d_name;
    if (name.compare(0, base.size(), base) != 0) continue;
    const long pid = std::strtol(name.c_str() + base.size(), nullptr, 10);
    if (pid > 0 && kill(pid_t(pid), 0) != 0 && errno == ESRCH)
      std::remove((dir + "/" + name).c_str());
  }
  closedir(d);
}

void write_all(int fd, const void* p, size_t n, const std::string& tmp) {
  const char* c = static_cast<const char*>(p);
  while (n) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw FileError("writing " + tmp + " failed: " + std::strerror(errno));
    c += w, n -= size_t(w);
  }
}

void write_atomically(const std::string& path, uint64_t n, const std::string& text,
                      const std::vector<char>& data) {
  static std::atomic<unsigned> counter{0};
  clean_stale_temps(path);
  const std::string tmp = temp_prefix(path) + std::to_string(long(getpid())) + "-" +
                          std::to_string(counter++) + "-" +
                          std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw FileError("cannot write " + tmp + ": " + std::strerror(errno));
  try {
    write_all(fd, &n, 8, tmp);
    write_all(fd, text.data(), text.size(), tmp);
    write_all(fd, data.data(), data.size(), tmp);
    if (::fsync(fd) != 0) throw FileError("cannot flush " + tmp + ": " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    std::remove(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw FileError("cannot replace " + path + ": " + std::strerror(err));
  }
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash ? slash : 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {  // make the rename itself durable
    ::fsync(dfd);
    ::close(dfd);
  }
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
               {"steps", std::to_string(m.steps())},
               {"build_seed", std::to_string(m.build_seed())}};
  for (const auto& kv : metadata)
    if (kv.first != kCrcKey) meta[kv.first] = kv.second;
  meta[kCrcKey] = kCrcPlaceholder;  // filled in below with the CRC of the whole file
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
  uint64_t n = text.size();
  const std::string key = std::string("\"") + kCrcKey + "\":\"" + kCrcPlaceholder + "\"";
  const size_t at = text.find(key);
  if (at == std::string::npos) throw FileError("internal: checksum placeholder missing");
  uint32_t crc = crc_table().update(0, &n, 8);
  crc = crc_table().update(crc, text.data(), text.size());
  crc = crc_table().update(crc, data.data(), data.size());
  text.replace(at + key.size() - 9, 8, hex8(crc));  // the CRC covers the placeholder's bytes
  write_atomically(path, n, text, data);
}

namespace {

std::string meta_str(const json& meta, const char* key, const std::string& path) {
  if (!meta.contains(key) || !meta[key].is_string())
    throw FileError(path + ": metadata lacks '" + key + "'");
  return meta[key].get<std::string>();
}

// Whole-string decimal integer in [lo, hi]: "5abc", " 5", "1e3" and "0x10" are refused.
long long strict_int(const std::string& s, long long lo, long long hi, const char* what,
                     const std::string& path) {
  long long v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size() || v < lo || v > hi)
    throw FileError(path + ": " + what + " '" + s + "' is not a number (an integer in " +
                    std::to_string(lo) + ".." + std::to_string(hi) + ")");
  return v;
}

// Whole-string finite decimal number (no hex, inf or nan).
double strict_real(const std::string& s, const char* what, const std::string& path) {
  const bool ok_chars = !s.empty() && s.find_first_not_of("0123456789+-.eE") == std::string::npos;
  char* end = nullptr;
  const double v = ok_chars ? std::strtod(s.c_str(), &end) : 0.0;
  if (!ok_chars || end != s.c_str() + s.size() || !std::isfinite(v))
    throw FileError(path + ": " + what + " '" + s + "' is not a finite decimal number");
  return v;
}

void check_entry(const json& h, const ParamInfo& p, size_t esize, size_t data_size,
                 const std::string& path) {
  if (!h.contains(p.name)) throw FileError(path + ": tensor '" + p.name + "' is missing");
  const json& t = h[p.name];
  const char* want = esize == 8 ? "F64" : "F32";
  if (!t.is_object() || t.value("dtype", "") != want)
    throw FileError(path + ": tensor '" + p.name + "' must be " + want);
  if (t.value("shape", json::array()) != json(p.shape))
    throw FileError(path + ": tensor '" + p.name + "' has shape " + t.value("shape", json()).dump() +
                    ", the model needs " + json(p.shape).dump());
  const json& off = t.value("data_offsets", json::array());
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
      !off[1].is_number_unsigned())
    throw FileError(path + ": tensor '" + p.name + "' has no valid data_offsets");
  uint64_t b = off[0], e = off[1];
  if (e < b || e > data_size || e - b != p.size * esize)
    throw FileError(path + ": tensor '" + p.name + "' lies outside the data or has the wrong size");
}

// Position of the checksum's 8 digits in the raw header: the value of the one key
// "neuromorph_crc32c" (JSON whitespace allowed around the colon); npos when not found once.
size_t crc_digits(const std::string& text) {
  const std::string key = std::string("\"") + kCrcKey + "\"";
  const size_t k = text.find(key);
  if (k == std::string::npos || text.find(key, k + 1) != std::string::npos) return std::string::npos;
  size_t i = k + key.size();
  auto ws = [&] { while (i < text.size() && std::strchr(" \t\r\n", text[i]) && text[i]) ++i; };
  ws();
  if (i >= text.size() || text[i] != ':') return std::string::npos;
  ++i;
  ws();
  if (i + 10 > text.size() || text[i] != '"' || text[i + 9] != '"') return std::string::npos;
  return i + 1;
}

// A regular file read front to back (FIFOs, devices and directories are refused before any
// read, so a load can neither block forever nor read without end).
struct File {
  FILE* f = nullptr;
  uint64_t size = 0;
  std::string path;
  explicit File(const std::string& p) : path(p) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0)
      throw FileError("cannot open " + p + ": " + std::strerror(errno));
    if (!S_ISREG(st.st_mode))
      throw FileError(p + ": not a regular file (a directory, device or pipe is not a model file)");
    f = std::fopen(p.c_str(), "rb");
    if (!f) throw FileError("cannot open " + p + ": " + std::strerror(errno));
    size = uint64_t(st.st_size);
  }
  ~File() {
    if (f) std::fclose(f);
  }
  void read(void* dst, size_t n) {
    if (std::fread(dst, 1, n, f) != n) throw FileError(path + ": truncated (or changed while loading)");
  }
};

}  // namespace

std::unique_ptr<ModelBase> load_model(const std::string& path) {
  if (!little_endian()) throw FileError("loading needs a little-endian machine");
  File file(path);
  if (file.size < 8) throw FileError(path + ": too short to be a model file");
  uint64_t n;
  file.read(&n, 8);
  if (n > kMaxHeader || n > file.size - 8)
    throw FileError(path + ": header length " + std::to_string(n) + " does not fit the file "
                    "(truncated or not a model file)");
  std::string text(n, '\0');
  file.read(text.data(), n);
  json h;
  try {
    h = json::parse(text);
  } catch (const json::exception&) {
    throw FileError(path + ": the header is not valid JSON (corrupt file?)");
  }
  if (!h.is_object() || !h.contains("__metadata__") || !h["__metadata__"].is_object())
    throw FileError(path + ": not a Neuromorph model file (no metadata)");
  const json& meta = h["__metadata__"];
  if (meta_str(meta, "format", path) != kFormat)
    throw FileError(path + ": not a Neuromorph model file");
  const std::string fv = meta_str(meta, "format_version", path);
  if (fv != "1" && fv != std::to_string(kFormatVersion))
    throw FileError(path + ": model file version " + fv + " is not supported (this engine "
                    "reads versions 1 to " + std::to_string(kFormatVersion) + ")");
  // Version 2: the CRC-32C of the file with the checksum's 8 digits written as zeros. It is
  // compared last, so a hand-edited file still gets the message of what is wrong in it.
  const bool checked = fv != "1";
  uint32_t crc = 0, want_crc = 0;
  bool crc_found = false;
  if (checked) {
    const std::string hex = meta_str(meta, kCrcKey, path);
    crc_found = hex.size() == 8 && hex.find_first_not_of("0123456789abcdef") == std::string::npos;
    want_crc = crc_found ? uint32_t(std::strtoul(hex.c_str(), nullptr, 16)) : 0;
    const size_t at = crc_found ? crc_digits(text) : std::string::npos;
    crc_found = at != std::string::npos && text.compare(at, 8, hex) == 0;
    std::string zeroed = text;
    if (crc_found) zeroed.replace(at, 8, kCrcPlaceholder);
    crc = crc_table().update(0, &n, 8);
    crc = crc_table().update(crc, zeroed.data(), zeroed.size());
  }
  const int batch = int(strict_int(meta_str(meta, "batch_size", path), 1, 1 << 30, "batch_size", path));
  const double lr = strict_real(meta_str(meta, "learning_rate", path), "learning_rate", path);
  const long steps = long(strict_int(meta_str(meta, "steps", path), 0, 1LL << 53, "steps", path));
  uint64_t seed = 0;
  if (meta.contains("build_seed")) {
    const std::string s = meta_str(meta, "build_seed", path);
    if (s.empty() || s.size() > 20 || s.find_first_not_of("0123456789") != std::string::npos ||
        (s.size() == 20 && s > "18446744073709551615"))
      throw FileError(path + ": build_seed must be an unsigned 64-bit integer, got '" +
                      s.substr(0, 40) + "'");
    seed = std::stoull(s);
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
  const uint64_t data_size = file.size - 8 - n;
  auto list = entries(*m);
  for (const auto& e : list) check_entry(h, *e.info, esize, data_size, path);
  for (auto it = h.begin(); it != h.end(); ++it)
    if (it.key() != "__metadata__" &&
        std::none_of(list.begin(), list.end(), [&](const Entry& e) { return e.info->name == it.key(); }))
      throw FileError(path + ": tensor '" + it.key() + "' does not belong to this model");
  auto begin_of = [&](const Entry& e) { return h[e.info->name]["data_offsets"][0].get<uint64_t>(); };
  std::sort(list.begin(), list.end(), [&](const Entry& a, const Entry& b) { return begin_of(a) < begin_of(b); });
  uint64_t at = 0;  // the tensors tile the data exactly: no gap, no overlap, nothing after
  for (const auto& e : list) {
    if (begin_of(e) != at)
      throw FileError(path + ": tensor '" + e.info->name + "' " +
                      (begin_of(e) < at ? "overlaps the tensor before it" : "leaves a gap before it"));
    at += e.info->size * esize;
  }
  if (at != data_size)
    throw FileError(path + ": " + std::to_string(data_size - at) + " bytes after the last tensor");
  // allocate; every value below is overwritten, and the seed redraws the fixed tensors a node
  // draws at build (`init normal` start states; files without it were written by builds of 0
  // or hold no such tensors)
  m->build(seed);
  // Stream the data in chunks of at most 1 MiB straight into the new model: the load's peak
  // is the model plus one chunk (the file is never held whole).
  const size_t chunk = (size_t(1) << 20) / esize;
  std::vector<char> buf(std::min<size_t>(chunk, 1 << 18) * esize);
  for (const auto& e : list) {
    for (size_t done = 0; done < e.info->size;) {
      const size_t count = std::min(chunk, e.info->size - done);
      buf.resize(count * esize);
      file.read(buf.data(), buf.size());
      if (checked) crc = crc_table().update(crc, buf.data(), buf.size());
      for (size_t i = 0; i < count; ++i) {
        double v;
        if (esize == 8) std::memcpy(&v, buf.data() + i * 8, 8);
        else { float f; std::memcpy(&f, buf.data() + i * 4, 4); v = f; }
        if (!std::isfinite(v)) throw FileError(path + ": tensor '" + e.info->name + "' holds NaN or inf");
      }
      m->write_tensor(e.info->name, e.state, done, count, buf.data());
      done += count;
    }
  }
  if (checked && (!crc_found || crc != want_crc))
    throw FileError(path + ": checksum mismatch (stored " + (crc_found ? hex8(want_crc) : "unreadable") +
                    ", computed " + hex8(crc) + "): the file is damaged");
  m->set_steps(steps);
  return m;
}

}  // namespace nm

// The registry of structured kinds (core/struct_node.h): filled at load by each kind's unit.
#include <array>
#include <mutex>

#include "struct_node.h"

namespace nm {
namespace {

struct Registry {
  std::mutex mu;
  std::array<KindEntry, size_t(NodeKind::kCount)> entries{};
  std::array<bool, size_t(NodeKind::kCount)> set{};
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

bool register_kind(const KindEntry& entry) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.entries[size_t(entry.kind)] = entry;
  r.set[size_t(entry.kind)] = true;
  return true;
}

const KindEntry* registered_kind(NodeKind kind) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  const size_t i = size_t(kind);
  return i < r.set.size() && r.set[i] ? &r.entries[i] : nullptr;
}

}  // namespace nm

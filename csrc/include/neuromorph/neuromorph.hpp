// C++ wrapper over the C API (neuromorph.h): an owning Model, errors as exceptions.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "neuromorph/neuromorph.h"

namespace neuromorph {

struct Error : std::runtime_error {
  int status;
  Error(int s, const std::string& what) : std::runtime_error(what), status(s) {}
};

inline void check(int status) {
  if (status != NM_OK) throw Error(status, nm_last_error());
}

class Model {
 public:
  static Model from_ir_file(const std::string& path, int batch_size, double learning_rate) {
    nm_handle h;
    check(nm_load_ir_file(path.c_str(), batch_size, learning_rate, &h));
    return Model(h);
  }
  static Model load(const std::string& path) {
    nm_handle h;
    check(nm_load(path.c_str(), &h));
    return Model(h);
  }
  Model(Model&& o) noexcept : h_(o.h_) { o.h_ = 0; }
  Model& operator=(Model&& o) noexcept {
    std::swap(h_, o.h_);
    return *this;
  }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  ~Model() {
    if (h_) nm_release(h_);
  }

  Model& build() { check(nm_build(h_)); return *this; }
  int batch_size() const { int b, i, o; check(nm_shape(h_, &b, &i, &o)); return b; }
  int input_width() const { int b, i, o; check(nm_shape(h_, &b, &i, &o)); return i; }
  int output_width() const { int b, i, o; check(nm_shape(h_, &b, &i, &o)); return o; }

  // inputs: n_batches * batch_size * input_width values, expected likewise with output_width
  double train(const std::vector<float>& inputs, const std::vector<float>& expected) {
    int n = batches(inputs.size(), input_width());
    if (size_t(n) * batch_size() * output_width() != expected.size())
      throw Error(NM_ERR_SHAPE, "expected holds a different number of batches than inputs");
    double loss = 0;
    check(nm_train(h_, inputs.data(), expected.data(), n, &loss));
    return loss;
  }
  std::vector<float> predict(const std::vector<float>& inputs) {
    int n = batches(inputs.size(), input_width());
    std::vector<float> out(size_t(n) * batch_size() * output_width());
    check(nm_predict(h_, inputs.data(), n, out.data()));
    return out;
  }
  void reset_state() { check(nm_reset_state(h_)); }
  void save(const std::string& path) const { check(nm_save(h_, path.c_str())); }
  nm_handle handle() const { return h_; }

 private:
  explicit Model(nm_handle h) : h_(h) {}
  int batches(size_t values, int width) const {
    size_t per = size_t(batch_size()) * width;
    if (values == 0 || values % per)
      throw Error(NM_ERR_SHAPE, "data must hold a whole number of batches of " +
                                    std::to_string(per) + " values");
    return int(values / per);
  }
  nm_handle h_ = 0;
};

}  // namespace neuromorph

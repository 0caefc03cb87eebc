// Loads an IR written by `mdlc compile`, trains it on data it generates (a fixed linear
// teacher), saves the model, and writes one batch of inputs and predictions as text so the
// saved file can be checked from Python. `embed --errors` exercises the C API's error paths.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <vector>

#include "neuromorph/neuromorph.hpp"

namespace {

float uniform(uint32_t& s) {  // a small LCG: the example must not depend on <random>'s output
  s = s * 1664525u + 1013904223u;
  return float(s >> 8) / float(1u << 24) * 2.0f - 1.0f;
}

int errors() {
  nm_handle h = 0;
  int fails = 0;
  auto expect = [&](int status, int want, const char* what) {
    if (status != want) {
      std::printf("FAIL %s: status %d, wanted %d (%s)\n", what, status, want, nm_last_error());
      ++fails;
    } else {
      std::printf("ok   %s -> %s\n", what, nm_last_error());
    }
  };
  expect(nm_load_ir_file("/nonexistent/model.json", 4, 0.1, &h), NM_ERR_FILE, "missing IR file");
  expect(nm_load_ir("{\"format\": \"other\"}", 4, 0.1, &h), NM_ERR_IR, "bad IR");
  expect(nm_load_ir("not json", 4, 0.1, &h), NM_ERR_IR, "not JSON");
  expect(nm_load("/nonexistent/model.nm", &h), NM_ERR_FILE, "missing model file");
  expect(nm_build(987654), NM_ERR_HANDLE, "unknown handle");
  expect(nm_load_ir(nullptr, 4, 0.1, &h), NM_ERR_ARGUMENT, "null IR");
  // A released handle stays an error (handles are never reused).
  const char* ir = std::getenv("NM_EMBED_IR");
  if (ir) {
    expect(nm_load_ir_file(ir, 4, 0.1, &h), NM_OK, "load IR");
    expect(nm_release(h), NM_OK, "release");
    expect(nm_build(h), NM_ERR_HANDLE, "build a released handle");
    expect(nm_release(h), NM_ERR_HANDLE, "release twice");
  }
  return fails;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--errors") return errors() ? 1 : 0;
  if (argc != 4) {
    std::fprintf(stderr, "usage: embed MODEL.json OUT.nm PREDICTIONS.txt | embed --errors\n");
    return 2;
  }
  try {
    nm_seed(7);
    auto model = neuromorph::Model::from_ir_file(argv[1], 8, 0.02);
    model.build();
    const int B = model.batch_size(), in = model.input_width(), out = model.output_width();
    const int n = 300;
    uint32_t s = 12345;
    std::vector<float> teacher(size_t(in) * out), x(size_t(n) * B * in), y(size_t(n) * B * out);
    for (auto& t : teacher) t = uniform(s) / std::sqrt(float(in));
    for (auto& v : x) v = uniform(s);
    for (size_t r = 0; r < size_t(n) * B; ++r)
      for (int o = 0; o < out; ++o) {
        float acc = 0;
        for (int i = 0; i < in; ++i) acc += x[r * in + i] * teacher[size_t(i) * out + o];
        y[r * out + o] = std::tanh(acc);
      }
    double first = 0, last = 0;
    for (int epoch = 0; epoch < 4; ++epoch) {
      last = model.train(x, y);
      if (epoch == 0) first = last;
      std::printf("epoch %d: mean loss %.6f\n", epoch + 1, last);
    }
    model.save(argv[2]);
    std::vector<float> batch(x.begin(), x.begin() + size_t(B) * in);
    model.reset_state();
    std::vector<float> pred = model.predict(batch);
    std::ofstream f(argv[3]);
    f.precision(9);
    for (float v : batch) f << v << ' ';
    f << '\n';
    for (float v : pred) f << v << ' ';
    f << '\n';
    std::printf("saved %s; loss %.6f -> %.6f\n", argv[2], first, last);
    return last < first ? 0 : 1;
  } catch (const neuromorph::Error& e) {
    std::fprintf(stderr, "neuromorph error %d: %s\n", e.status, e.what());
    return 1;
  }
}

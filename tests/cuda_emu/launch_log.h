// A Launcher for the emulated-kernel tests: emu::Launcher's launches, each recorded as the
// kernel's demangled name and its grid, so that a test can check which kernels (and which
// index variants) its host planning chose.
#pragma once

#include <cxxabi.h>
#include <dlfcn.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cuda_emu.h"

namespace emu_test {

// One log per module: an inline function's static is one object across every shared library that
// defines it (the dynamic linker merges them), so the modules' logs would mix -- a test reading
// lrn_max_pool_emu's launches got max_pool_emu's left-overs. Internal linkage keeps them apart.
namespace {
std::vector<std::string>& launch_log() {
  static std::vector<std::string> log;
  return log;
}
}  // namespace

template <typename F>
std::string kernel_name(F* kernel) {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(kernel), &info) == 0 || info.dli_sname == nullptr) return "?";
  int status = 0;
  char* name = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
  std::string out = status == 0 && name ? name : info.dli_sname;
  std::free(name);
  return out;
}

struct LoggingLauncher {
  template <typename... P, typename... A>
  static void launch(void (*kernel)(P...), dim3 grid, int threads, A&&... args) {
    launch_log().push_back(kernel_name(kernel) + " grid=(" + std::to_string(grid.x) + "," + std::to_string(grid.y) +
                           ") threads=" + std::to_string(threads));
    emu::Launcher::launch(kernel, grid, threads, std::forward<A>(args)...);
  }
  static int multiprocessors() { return emu::Launcher::multiprocessors(); }
};

// The launches since the last call.
inline std::vector<std::string> take_log() {
  std::vector<std::string> out;
  out.swap(launch_log());
  return out;
}

}  // namespace emu_test

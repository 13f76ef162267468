// The CUDA emulator's runtime: the fiber scheduler that runs a launch's blocks, the sanitizers
// (memcheck, initcheck, racecheck, synccheck), the counters, the registry of device memory, and
// the C entry points through which Python reads results (cuda_emu/runtime.py). Linked into every
// harness by cuda_emu.build.load; docs/emulator.md describes the design.
#include <Python.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <vector>

#if !defined(__x86_64__) || defined(AK_EMU_UCONTEXT)
#include <ucontext.h>
#define AK_EMU_USE_UCONTEXT 1
#endif

#include "cuda_emu.h"

#pragma GCC visibility push(hidden)

// ------------------------------------------------------------------------------------------------
// Fibers: each CUDA thread of a block runs on a stack of its own; switching saves the callee-saved
// registers and the stack pointer (x86-64: a few instructions; elsewhere ucontext).
// ------------------------------------------------------------------------------------------------
#ifndef AK_EMU_USE_UCONTEXT
extern "C" void ak_emu_switch(void** save_sp, void* load_sp);
extern "C" void ak_emu_trampoline();
asm(R"(
.text
.p2align 4
.globl ak_emu_switch
.hidden ak_emu_switch
.type ak_emu_switch,@function
ak_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size ak_emu_switch, .-ak_emu_switch
.p2align 4
.globl ak_emu_trampoline
.hidden ak_emu_trampoline
.type ak_emu_trampoline,@function
ak_emu_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
.size ak_emu_trampoline, .-ak_emu_trampoline
)");
#endif

namespace emu {
namespace detail {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kArenaBytes = 228 * 1024;     // an sm_90 SM's shared memory
constexpr size_t kStaticSharedLimit = 48 * 1024;  // what a block may declare statically
constexpr int kMaxThreads = 1024;

struct Rec {            // one checked access, kept until its warp's accesses are grouped
  const void* site;     // return address into the kernel: which access (instruction) it was
  uintptr_t addr;
  uint32_t size;
  uint8_t space, kind;  // 0 global / 1 shared, kLoad / kStore
};

enum FiberState { kRunnable, kAtBarrier, kInCollective, kDone };

struct Fiber {
  void* sp = nullptr;
  char* mem = nullptr;  // the mapping: a guard page, then the stack
#ifdef AK_EMU_USE_UCONTEXT
  ucontext_t uc;
#endif
  int state = kDone;
  const char* file = "";
  unsigned line = 0;
  std::vector<Rec> log;
};

struct Warp {
  unsigned exist = 0, done = 0, arrived = 0, op_mask = 0;
  int op_kind = -1;
  unsigned in_bytes = 0, out_bytes = 0;
  const char* file = "";
  unsigned line = 0;
  uint64_t epoch = 1;  // warp-synchronisation epoch: bumped by each collective of all live lanes
  alignas(16) unsigned char in[32 * 64];
  alignas(16) unsigned char out[32 * 32];
};

// Shadow of one byte of the shared arena. Epochs grow over the whole run, so entries left by
// earlier blocks are older than any barrier of the current block and need no clearing.
struct Shadow {
  uint64_t w_epoch = 0;  // block epoch of the last write (below the block's first: never written here)
  uint64_t w_wep = 0;    // the writer's warp epoch then
  uint64_t r_epoch = 0;  // block epoch of the reads summarised below
  uint64_t r_wep = 0;    // the latest warp epoch among them
  uint16_t w_tid = 0, r_tid = 0, r_tid2 = 0xffff;
  int16_t r_warp = -1;   // the readers' warp, or -1 for several
};

struct AccessStats {
  uint64_t instructions = 0, requests = 0, bytes = 0, sectors = 0, wavefronts = 0, ideal = 0;
  uint64_t width_requests[5] = {0, 0, 0, 0, 0};  // 1, 2, 4, 8, 16 bytes
};

struct SharedAlloc {
  const char* name;
  size_t offset, bytes;
};

struct Config {
  bool memcheck = true, initcheck = true, racecheck = true, synccheck = true, count = true;
  int multiprocessors = 2;  // few: small test shapes still split into several chunks
};

struct Runtime {
  std::mutex launch_mutex;
  Config cfg;
  bool in_kernel = false;

  // the launch
  std::string kernel;
  Body body = nullptr;
  void* ctx = nullptr;
  int threads = 0;
  dim3 grid;
  std::string error;  // first failure of the launch

  // the block
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int cur = -1;
  void* sched_sp = nullptr;
#ifdef AK_EMU_USE_UCONTEXT
  ucontext_t sched_uc;
#endif
  uint64_t block_serial = 0;
  uint64_t epoch = 1, block_first_epoch = 1;
  unsigned char* arena = nullptr;
  std::vector<Shadow> shadow;
  size_t arena_used = 0, shared_peak = 0;
  std::vector<SharedAlloc> allocs;

  // counts of the launch
  AccessStats stats[2][2];  // [global, shared][load, store]
  std::unordered_set<uint64_t> sectors[2];
  uint64_t blocks = 0, barriers = 0, mma = 0, ldmatrix = 0, shuffles = 0, votes = 0, syncwarps = 0;
  uint64_t nonuniform = 0;
  std::vector<std::string> nonuniform_examples;

  // results for Python
  std::vector<std::string> records;
  uint64_t dropped = 0;
  std::string json;
};

Runtime& R() {
  static Runtime* r = new Runtime;  // never destroyed: fibers may hold references at exit
  return *r;
}

struct Abort {};  // unwinds a failing thread's fiber back to its entry

// ------------------------------------------------------------------------------------------------
// Registry of device memory: every CPU allocation torch makes while the emulator is loaded (a
// tracking allocator wraps the CPU allocator), plus ranges registered explicitly.
// ------------------------------------------------------------------------------------------------
struct Registry {
  std::mutex m;
  std::map<uintptr_t, size_t> live;
};

// One registry per process, shared by every harness module: the first to load creates it and
// installs the tracking allocator; the others find it (a capsule on Python's sys module), so a
// tensor made after any harness loaded is known to all of them.
constexpr const char* kRegistryName = "alexnet_kernels.cuda_emu.registry.v1";
Registry* g_registry = nullptr;
bool g_registry_created = false;

Registry& reg() {
  if (g_registry == nullptr) {
    g_registry = new Registry;  // no Python here (a registry of this module alone)
    g_registry_created = true;
  }
  return *g_registry;
}

void attach_registry() {
  PyGILState_STATE gil = PyGILState_Ensure();
  PyObject* sys = PyImport_ImportModule("sys");
  PyObject* cap = sys ? PyObject_GetAttrString(sys, "_alexnet_kernels_cuda_emu_registry") : nullptr;
  if (cap && PyCapsule_IsValid(cap, kRegistryName)) {
    g_registry = static_cast<Registry*>(PyCapsule_GetPointer(cap, kRegistryName));
  } else {
    PyErr_Clear();
    g_registry = new Registry;
    g_registry_created = true;
    PyObject* made = PyCapsule_New(g_registry, kRegistryName, nullptr);
    if (sys && made) PyObject_SetAttrString(sys, "_alexnet_kernels_cuda_emu_registry", made);
    Py_XDECREF(made);
  }
  Py_XDECREF(cap);
  Py_XDECREF(sys);
  PyGILState_Release(gil);
}

bool find_alloc(uintptr_t a, uintptr_t* lo, uintptr_t* hi) {
  Registry& g = reg();
  std::lock_guard<std::mutex> lock(g.m);
  auto it = g.live.upper_bound(a);
  if (it == g.live.begin()) return false;
  --it;
  if (a >= it->first + it->second) return false;
  *lo = it->first;
  *hi = it->first + it->second;
  return true;
}

// Wraps the CPU allocator so that every allocation is registered while it lives. Its data
// pointers stay "simple" (context == data, freed through raw_deleter()) as the default CPU
// allocator's are: some of torch's own code (oneDNN's convolutions) allocates through
// raw_allocate / raw_deallocate, which require that.
c10::DeleterFnPtr g_inner_deleter = nullptr;

void tracked_delete(void* p) {
  emu::untrack(p);
  g_inner_deleter(p);
}

class TrackingAllocator final : public c10::Allocator {
 public:
  explicit TrackingAllocator(c10::Allocator* inner) : inner_(inner) {}
  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr dp = inner_->allocate(n);
    void* p = dp.get();
    if (p == nullptr || n == 0 || dp.get_context() != p || dp.get_deleter() != g_inner_deleter) {
      // Not the plain form this wrapper knows how to take over: register it for its lifetime
      // through a context that owns the original.
      if (p != nullptr && n != 0) {
        const c10::Device dev = dp.device();
        auto* ctx = new Ctx{std::move(dp), p};
        emu::track(p, n);
        return c10::DataPtr(p, ctx, &release, dev);
      }
      return dp;
    }
    const c10::Device dev = dp.device();
    dp.release_context();
    emu::track(p, n);
    return c10::DataPtr(p, p, &tracked_delete, dev);
  }
  c10::DeleterFnPtr raw_deleter() const override { return g_inner_deleter ? &tracked_delete : nullptr; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  struct Ctx {
    c10::DataPtr inner;
    void* p;
  };
  static void release(void* c) {
    auto* ctx = static_cast<Ctx*>(c);
    emu::untrack(ctx->p);
    delete ctx;  // frees through the wrapped allocator's deleter
  }
  c10::Allocator* inner_;
};

struct InstallAllocator {
  InstallAllocator() {
    if (Py_IsInitialized()) attach_registry();
    else reg();
    if (!g_registry_created) return;  // an earlier harness tracks allocations already
    c10::Allocator* inner = c10::GetCPUAllocator();
    g_inner_deleter = inner->raw_deleter();
    c10::SetCPUAllocator(new TrackingAllocator(inner), /*priority=*/255);
  }
};
InstallAllocator install_allocator;

// ------------------------------------------------------------------------------------------------
// Messages
// ------------------------------------------------------------------------------------------------
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

std::string demangle(const char* s) {
  int status = 0;
  char* d = abi::__cxa_demangle(s, nullptr, nullptr, &status);
  std::string r = status == 0 && d ? d : s;
  free(d);
  return r;
}

// Function symbols of a loaded object, from its ELF symbol table (.symtab, else .dynsym): kernels
// in an anonymous namespace or with hidden visibility are not in what dladdr reads.
struct Symbols {
  struct Sym {
    uint64_t value, size;
    std::string name;
  };
  std::vector<Sym> syms;  // sorted by value
};

const Symbols& symbols_of(const char* path) {
  static std::map<std::string, Symbols> cache;
  auto it = cache.find(path);
  if (it != cache.end()) return it->second;
  Symbols& out = cache[path];
  const int fd = open(path, O_RDONLY);
  if (fd < 0) return out;
  const off_t len = lseek(fd, 0, SEEK_END);
  void* m = len > 0 ? mmap(nullptr, static_cast<size_t>(len), PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
  close(fd);
  if (m == MAP_FAILED) return out;
  const auto* base = static_cast<const unsigned char*>(m);
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
  if (len >= static_cast<off_t>(sizeof(Elf64_Ehdr)) && std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 &&
      eh->e_ident[EI_CLASS] == ELFCLASS64 && eh->e_shoff + uint64_t(eh->e_shnum) * sizeof(Elf64_Shdr) <= uint64_t(len)) {
    const auto* sh = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
    for (int want : {SHT_SYMTAB, SHT_DYNSYM}) {
      for (int i = 0; i < eh->e_shnum && out.syms.empty(); ++i) {
        if (static_cast<int>(sh[i].sh_type) != want || sh[i].sh_link >= eh->e_shnum) continue;
        const auto* sym = reinterpret_cast<const Elf64_Sym*>(base + sh[i].sh_offset);
        const char* str = reinterpret_cast<const char*>(base + sh[sh[i].sh_link].sh_offset);
        const size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
        for (size_t k = 0; k < n; ++k)
          if (ELF64_ST_TYPE(sym[k].st_info) == STT_FUNC && sym[k].st_value != 0)
            out.syms.push_back(Symbols::Sym{sym[k].st_value, sym[k].st_size, str + sym[k].st_name});
      }
      if (!out.syms.empty()) break;
    }
  }
  munmap(m, static_cast<size_t>(len));
  std::sort(out.syms.begin(), out.syms.end(), [](const auto& a, const auto& b) { return a.value < b.value; });
  return out;
}

// The function holding code address p, and p's offset in it; false if unknown.
bool symbolize(const void* p, std::string* name, uint64_t* offset) {
  Dl_info info;
  if (!dladdr(p, &info) || !info.dli_fname) return false;
  const uint64_t off = reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(info.dli_fbase);
  const Symbols& s = symbols_of(info.dli_fname);
  auto it = std::upper_bound(s.syms.begin(), s.syms.end(), off,
                             [](uint64_t v, const Symbols::Sym& x) { return v < x.value; });
  if (it == s.syms.begin()) return false;
  --it;
  if (off >= it->value + std::max<uint64_t>(it->size, 1)) return false;
  *name = demangle(it->name.c_str());
  *offset = off - it->value;
  return true;
}

std::string kernel_name(const void* fn) {
  std::string name;
  uint64_t off;
  if (symbolize(fn, &name, &off) && off == 0) return name;
  return format("kernel@%p", fn);
}

// An access site: the function it is in (the kernel, or a helper the compiler did not inline)
// and the offset there; objdump -d on the harness's .so maps it to an instruction.
std::string site_name(const void* site) {
  std::string name;
  uint64_t off;
  if (symbolize(site, &name, &off)) return format("%s+0x%llx", name.c_str(), (unsigned long long)off);
  return format("%p", site);
}

std::string where_block() {
  const Runtime& r = R();
  return format("%s, block (%u,%u,%u)", r.kernel.c_str(), blockIdx.x, blockIdx.y, blockIdx.z);
}

std::string where(int tid) {
  const Runtime& r = R();
  return format("%s, block (%u,%u,%u), thread %d", r.kernel.c_str(), blockIdx.x, blockIdx.y, blockIdx.z, tid);
}

std::string shared_place(size_t off) {
  for (const SharedAlloc& a : R().allocs)
    if (off >= a.offset && off < a.offset + a.bytes) return format("%s + %zu bytes", a.name, off - a.offset);
  return format("arena offset %zu", off);
}

[[noreturn]] void fail(const char* check, const std::string& msg) {
  Runtime& r = R();
  if (r.error.empty()) r.error = format("cuda_emu %s: ", check) + msg;
  if (r.cur >= 0) throw Abort{};
  throw std::runtime_error(r.error);
}

const char* collective_name(int kind) {
  switch (kind) {
    case kSyncwarp: return "__syncwarp";
    case kShuffle: return "a warp shuffle";
    case kVote: return "a warp vote";
    case kMma: return "mma.sync";
    case kLdmatrix: return "ldmatrix";
  }
  return "?";
}

// ------------------------------------------------------------------------------------------------
// Fiber switching
// ------------------------------------------------------------------------------------------------
void fiber_main(void* arg);

#ifdef AK_EMU_USE_UCONTEXT
void fiber_main_uc(unsigned hi, unsigned lo) {
  fiber_main(reinterpret_cast<void*>((uintptr_t(hi) << 32) | lo));
}
#endif

void prepare_fiber(int t) {
  Runtime& r = R();
  Fiber& f = r.fibers[t];
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  if (f.mem == nullptr) {
    void* m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("cuda_emu: cannot map a thread's stack");
    mprotect(m, page, PROT_NONE);  // overflow faults instead of corrupting the neighbour's stack
    f.mem = static_cast<char*>(m);
  }
  char* base = f.mem + page;
#ifdef AK_EMU_USE_UCONTEXT
  getcontext(&f.uc);
  f.uc.uc_stack.ss_sp = base;
  f.uc.uc_stack.ss_size = kStackBytes;
  f.uc.uc_link = nullptr;
  const uintptr_t a = reinterpret_cast<uintptr_t>(&f);
  makecontext(&f.uc, reinterpret_cast<void (*)()>(&fiber_main_uc), 2, unsigned(a >> 32), unsigned(a));
#else
  // The frame ak_emu_switch pops: mxcsr and x87 control word, r15, r14, r13 (entry), r12 (arg),
  // rbx, rbp, return address (the trampoline, entered with a 16-byte aligned stack).
  uintptr_t s = (reinterpret_cast<uintptr_t>(base + kStackBytes) - 80) & ~uintptr_t(15);
  auto* w = reinterpret_cast<uint64_t*>(s);
  uint32_t mx;
  uint16_t cw;
  asm volatile("stmxcsr %0" : "=m"(mx));
  asm volatile("fnstcw %0" : "=m"(cw));
  w[0] = uint64_t(mx) | (uint64_t(cw) << 32);
  w[1] = 0;
  w[2] = 0;
  w[3] = reinterpret_cast<uint64_t>(&fiber_main);
  w[4] = reinterpret_cast<uint64_t>(&f);
  w[5] = 0;
  w[6] = 0;
  w[7] = reinterpret_cast<uint64_t>(&ak_emu_trampoline);
  f.sp = reinterpret_cast<void*>(s);
#endif
  f.state = kRunnable;
  f.log.clear();
}

void resume(int t) {
  Runtime& r = R();
  r.cur = t;
  threadIdx = dim3(static_cast<unsigned>(t));
#ifdef AK_EMU_USE_UCONTEXT
  swapcontext(&r.sched_uc, &r.fibers[t].uc);
#else
  ak_emu_switch(&r.sched_sp, r.fibers[t].sp);
#endif
  r.cur = -1;
}

// From the running fiber back to the scheduler, leaving it in `state`.
void yield(int state) {
  Runtime& r = R();
  Fiber& f = r.fibers[r.cur];
  f.state = state;
#ifdef AK_EMU_USE_UCONTEXT
  swapcontext(&f.uc, &r.sched_uc);
#else
  ak_emu_switch(&f.sp, r.sched_sp);
#endif
}

// ------------------------------------------------------------------------------------------------
// Counting: a warp's accesses are grouped into requests when its lanes synchronise (a warp
// collective, a barrier, the end of the block). Lane l's n-th access at site s (and of the same
// space, direction and width) joins the other lanes' n-th access at s: one instruction, one
// request, as a converged warp issues it.
// ------------------------------------------------------------------------------------------------
int width_index(unsigned size) {
  switch (size) {
    case 1: return 0;
    case 2: return 1;
    case 4: return 2;
    case 8: return 3;
    default: return 4;
  }
}

struct Entry {
  const void* site;
  uint32_t sk;  // space, kind, size
  uint32_t lane, n;
  uintptr_t addr;
};

// Shared-memory wavefronts of one request: lanes split into phases by width (32-bit and narrower:
// the whole warp; 64-bit: half warps; 128-bit: quarter warps); in each phase, the most distinct
// 4-byte words that fall in one of the 32 banks.
void bank_wavefronts(const uintptr_t* addr, const unsigned* lanes, int n, unsigned size, uint64_t* wave,
                     uint64_t* ideal) {
  const int phases = size <= 4 ? 1 : size == 8 ? 2 : 4;
  const int per = 32 / phases;
  for (int ph = 0; ph < phases; ++ph) {
    uint64_t words[32 * 8];
    int nw = 0;
    for (int i = 0; i < n; ++i) {
      if (static_cast<int>(lanes[i]) / per != ph) continue;
      const uintptr_t off = addr[i] - reinterpret_cast<uintptr_t>(R().arena);
      for (uintptr_t w = off / 4; w <= (off + size - 1) / 4 && nw < 32 * 8; ++w) words[nw++] = w;
    }
    if (nw == 0) continue;
    std::sort(words, words + nw);
    nw = static_cast<int>(std::unique(words, words + nw) - words);
    int per_bank[32] = {0};
    int worst = 0;
    for (int i = 0; i < nw; ++i) worst = std::max(worst, ++per_bank[words[i] % 32]);
    *wave += static_cast<uint64_t>(worst);
    *ideal += 1;
  }
}

void add_request(int space, int kind, unsigned size, const uintptr_t* addr, const unsigned* lanes, int n) {
  Runtime& r = R();
  AccessStats& s = r.stats[space][kind];
  s.instructions += static_cast<uint64_t>(n);
  s.requests += 1;
  s.bytes += static_cast<uint64_t>(n) * size;
  s.width_requests[width_index(size)] += 1;
  if (space == 0) {
    uint64_t sec[64];
    int ns = 0;
    for (int i = 0; i < n; ++i)
      for (uintptr_t q = addr[i] / 32; q <= (addr[i] + size - 1) / 32 && ns < 64; ++q) sec[ns++] = q;
    std::sort(sec, sec + ns);
    ns = static_cast<int>(std::unique(sec, sec + ns) - sec);
    s.sectors += static_cast<uint64_t>(ns);
    for (int i = 0; i < ns; ++i) r.sectors[kind].insert(sec[i]);
  } else {
    bank_wavefronts(addr, lanes, n, size, &s.wavefronts, &s.ideal);
  }
}

void flush_warp(int w) {
  Runtime& r = R();
  if (!r.cfg.count) return;
  static thread_local std::vector<Entry> e;
  e.clear();
  for (int l = 0; l < 32; ++l) {
    const int t = 32 * w + l;
    if (t >= r.threads) break;
    std::vector<Rec>& log = r.fibers[t].log;
    for (const Rec& x : log)
      e.push_back(Entry{x.site, (uint32_t(x.space) << 31) | (uint32_t(x.kind) << 30) | x.size, uint32_t(l), 0, x.addr});
    log.clear();
  }
  if (e.empty()) return;
  auto key_less = [](const Entry& a, const Entry& b) {
    return a.site != b.site ? a.site < b.site : a.sk < b.sk;
  };
  // Number each lane's accesses per key, in program order.
  std::stable_sort(e.begin(), e.end(), [&](const Entry& a, const Entry& b) {
    if (key_less(a, b) || key_less(b, a)) return key_less(a, b);
    return a.lane < b.lane;
  });
  for (size_t i = 0; i < e.size();) {
    size_t j = i;
    uint32_t lo = UINT32_MAX, hi = 0;
    while (j < e.size() && !key_less(e[i], e[j]) && !key_less(e[j], e[i])) {
      size_t k = j;
      while (k < e.size() && e[k].lane == e[j].lane && !key_less(e[j], e[k]) && !key_less(e[k], e[j])) {
        e[k].n = static_cast<uint32_t>(k - j);
        ++k;
      }
      lo = std::min<uint32_t>(lo, static_cast<uint32_t>(k - j));
      hi = std::max<uint32_t>(hi, static_cast<uint32_t>(k - j));
      j = k;
    }
    if (lo != hi) {
      // Lanes disagree on how often they reached this access: the grouping by n-th access pairs
      // up accesses that a diverged warp would have issued apart.
      r.nonuniform += hi;
      if (r.nonuniform_examples.size() < 8) {
        const uint32_t sk = e[i].sk;
        r.nonuniform_examples.push_back(format(
            "%s %s of %u bytes at %s: lanes of warp %d in block (%u,%u,%u) made %u to %u of them between two "
            "synchronisations",
            sk >> 31 ? "shared" : "global", (sk >> 30 & 1) ? "store" : "load", sk & 0x3fffffff,
            site_name(e[i].site).c_str(), w, blockIdx.x, blockIdx.y, blockIdx.z, lo, hi));
      }
    }
    i = j;
  }
  std::sort(e.begin(), e.end(), [&](const Entry& a, const Entry& b) {
    if (key_less(a, b) || key_less(b, a)) return key_less(a, b);
    return a.n != b.n ? a.n < b.n : a.lane < b.lane;
  });
  uintptr_t addr[32];
  unsigned lanes[32];
  for (size_t i = 0; i < e.size();) {
    size_t j = i;
    int n = 0;
    while (j < e.size() && e[j].n == e[i].n && !key_less(e[i], e[j]) && !key_less(e[j], e[i])) {
      if (n < 32) {
        addr[n] = e[j].addr;
        lanes[n] = e[j].lane;
        ++n;
      }
      ++j;
    }
    const uint32_t sk = e[i].sk;
    add_request(static_cast<int>(sk >> 31), static_cast<int>(sk >> 30 & 1), sk & 0x3fffffff, addr, lanes, n);
    i = j;
  }
}

void flush_all() {
  Runtime& r = R();
  for (size_t w = 0; w < r.warps.size(); ++w) flush_warp(static_cast<int>(w));
}

// ------------------------------------------------------------------------------------------------
// Shared-memory checks
// ------------------------------------------------------------------------------------------------
bool ordered(const Runtime& r, int tid, unsigned prev_tid, uint64_t prev_epoch, uint64_t prev_wep) {
  if (static_cast<int>(prev_tid) == tid || prev_epoch < r.epoch) return true;
  const int w = tid / 32;
  return static_cast<int>(prev_tid) / 32 == w && prev_wep < r.warps[w].epoch;
}

void shared_check(int tid, uintptr_t a, unsigned size, unsigned kind) {
  Runtime& r = R();
  const uintptr_t base = reinterpret_cast<uintptr_t>(r.arena);
  const bool inside = a >= base && a + size <= base + r.arena_used;
  if (!inside) {
    if (r.cfg.memcheck)
      fail("memcheck", format("%s: shared %s of %u bytes at %p is outside the block's %zu bytes of shared memory",
                              where(tid).c_str(), kind == kLoad ? "load" : "store", size,
                              reinterpret_cast<void*>(a), r.arena_used));
    return;
  }
  const size_t off = a - base;
  if (r.cfg.memcheck && (size & (size - 1)) == 0 && a % size != 0)
    fail("memcheck", format("%s: misaligned shared %s of %u bytes at %s", where(tid).c_str(),
                            kind == kLoad ? "load" : "store", size, shared_place(off).c_str()));
  if (!r.cfg.initcheck && !r.cfg.racecheck) return;
  const int w = tid / 32;
  const uint64_t wep = r.warps[w].epoch;
  for (size_t b = off; b < off + size; ++b) {
    Shadow& s = r.shadow[b];
    const bool written = s.w_epoch >= r.block_first_epoch;
    if (kind == kLoad) {
      if (r.cfg.initcheck && !written)
        fail("initcheck", format("%s: reads %u bytes of shared memory at %s, which no thread of the block has "
                                 "written",
                                 where(tid).c_str(), size, shared_place(off).c_str()));
      if (r.cfg.racecheck && written && !ordered(r, tid, s.w_tid, s.w_epoch, s.w_wep))
        fail("racecheck", format("%s: reads %s, written by thread %u with no barrier between them "
                                 "(read-after-write hazard)",
                                 where(tid).c_str(), shared_place(b).c_str(), unsigned(s.w_tid)));
      if (s.r_epoch != r.epoch) {
        s.r_epoch = r.epoch;
        s.r_tid = static_cast<uint16_t>(tid);
        s.r_tid2 = 0xffff;
        s.r_warp = static_cast<int16_t>(w);
        s.r_wep = wep;
      } else {
        if (s.r_tid != tid && s.r_tid2 == 0xffff) s.r_tid2 = static_cast<uint16_t>(tid);
        if (s.r_warp != w) s.r_warp = -1;
        s.r_wep = std::max(s.r_wep, wep);
      }
    } else {
      if (r.cfg.racecheck) {
        if (written && !ordered(r, tid, s.w_tid, s.w_epoch, s.w_wep))
          fail("racecheck", format("%s: writes %s, written by thread %u with no barrier between them "
                                   "(write-after-write hazard)",
                                   where(tid).c_str(), shared_place(b).c_str(), unsigned(s.w_tid)));
        if (s.r_epoch == r.epoch) {
          const bool others = s.r_tid != tid || s.r_tid2 != 0xffff;
          const bool synced = s.r_warp == w && s.r_wep < wep;
          if (others && !synced) {
            const unsigned other = s.r_tid != tid ? s.r_tid : s.r_tid2;
            fail("racecheck", format("%s: writes %s, read by thread %u with no barrier between them "
                                     "(write-after-read hazard)",
                                     where(tid).c_str(), shared_place(b).c_str(), other));
          }
        }
      }
      s.w_tid = static_cast<uint16_t>(tid);
      s.w_epoch = r.epoch;
      s.w_wep = wep;
      s.r_epoch = 0;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// The scheduler
// ------------------------------------------------------------------------------------------------
void fiber_main(void* arg) {
  Runtime& r = R();
  Fiber* f = static_cast<Fiber*>(arg);
  const int tid = static_cast<int>(f - r.fibers.data());
  try {
    r.body(r.ctx);
  } catch (const Abort&) {
  } catch (const c10::Error& e) {
    if (r.error.empty()) r.error = format("cuda_emu: %s threw: ", where(tid).c_str()) + e.what_without_backtrace();
  } catch (const std::exception& e) {
    if (r.error.empty()) r.error = format("cuda_emu: %s threw: ", where(tid).c_str()) + e.what();
  } catch (...) {
    if (r.error.empty()) r.error = format("cuda_emu: %s threw", where(tid).c_str());
  }
  r.warps[tid / 32].done |= 1u << (tid % 32);
  yield(kDone);
  __builtin_trap();  // a finished fiber is never resumed
}

std::string describe_waiters() {
  Runtime& r = R();
  std::string s;
  int shown = 0;
  // The first thread in each distinct state, in thread order.
  int last_state = -1;
  const char* last_file = nullptr;
  unsigned last_line = 0;
  for (int t = 0; t < r.threads && shown < 4; ++t) {
    const Fiber& f = r.fibers[t];
    if (f.state == last_state && f.file == last_file && f.line == last_line) continue;
    last_state = f.state;
    last_file = f.file;
    last_line = f.line;
    ++shown;
    if (!s.empty()) s += "; ";
    if (f.state == kDone) s += format("thread %d has exited", t);
    else if (f.state == kAtBarrier) s += format("thread %d waits at __syncthreads (%s:%u)", t, f.file, f.line);
    else s += format("thread %d waits in %s (%s:%u)", t, collective_name(r.warps[t / 32].op_kind), f.file, f.line);
  }
  return s;
}

// All threads are blocked: release the barrier they all wait at, or fail.
void settle_barrier() {
  Runtime& r = R();
  int at_barrier = 0, done = 0, in_coll = 0;
  bool same_site = true;
  const Fiber* first = nullptr;
  for (int t = 0; t < r.threads; ++t) {
    const Fiber& f = r.fibers[t];
    if (f.state == kDone) ++done;
    else if (f.state == kInCollective) ++in_coll;
    else if (f.state == kAtBarrier) {
      ++at_barrier;
      if (!first) first = &f;
      else if (f.file != first->file || f.line != first->line) same_site = false;
    }
  }
  if (in_coll > 0) {
    r.cur = -1;
    fail("synccheck", format("%s: a warp collective that not every lane of its mask reaches: %s",
                             where_block().c_str(), describe_waiters().c_str()));
  }
  if (r.cfg.synccheck && (done > 0 || !same_site))
    fail("synccheck", format("%s: a barrier that not every thread of the block reaches (%d of %d at it): %s",
                             where_block().c_str(),
                             at_barrier, r.threads, describe_waiters().c_str()));
  flush_all();
  ++r.epoch;
  ++r.barriers;
  for (int t = 0; t < r.threads; ++t)
    if (r.fibers[t].state == kAtBarrier) r.fibers[t].state = kRunnable;
}

void run_block(dim3 b) {
  Runtime& r = R();
  blockIdx = b;
  ++r.block_serial;
  ++r.blocks;
  r.arena_used = 0;
  r.allocs.clear();
  ++r.epoch;
  r.block_first_epoch = r.epoch;
  const int nw = (r.threads + 31) / 32;
  for (int w = 0; w < nw; ++w) {
    Warp& W = r.warps[w];
    const int lanes = std::min(32, r.threads - 32 * w);
    W.exist = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    W.done = W.arrived = 0;
    W.op_kind = -1;
  }
  for (int t = 0; t < r.threads; ++t) prepare_fiber(t);
  r.in_kernel = true;
  for (;;) {
    bool ran = false;
    for (int t = 0; t < r.threads; ++t) {
      if (r.fibers[t].state != kRunnable) continue;
      resume(t);
      ran = true;
      if (!r.error.empty()) {
        r.in_kernel = false;
        return;
      }
    }
    if (ran) continue;
    bool all_done = true;
    for (int t = 0; t < r.threads && all_done; ++t) all_done = r.fibers[t].state == kDone;
    if (all_done) break;
    try {
      settle_barrier();
    } catch (const std::runtime_error&) {
      r.in_kernel = false;
      return;
    }
  }
  flush_all();
  r.in_kernel = false;
}

void reset_counts() {
  Runtime& r = R();
  for (auto& sp : r.stats)
    for (auto& s : sp) s = AccessStats{};
  r.sectors[0].clear();
  r.sectors[1].clear();
  r.blocks = r.barriers = r.mma = r.ldmatrix = r.shuffles = r.votes = r.syncwarps = 0;
  r.nonuniform = 0;
  r.nonuniform_examples.clear();
  r.shared_peak = 0;
}

std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (static_cast<unsigned char>(c) < 0x20) o += format("\\u%04x", c);
    else o += c;
  }
  return o + "\"";
}

std::string stats_json(const AccessStats& s, bool global) {
  std::string o = format("{\"instructions\": %llu, \"requests\": %llu, \"bytes\": %llu",
                         (unsigned long long)s.instructions, (unsigned long long)s.requests,
                         (unsigned long long)s.bytes);
  if (global) o += format(", \"sectors\": %llu", (unsigned long long)s.sectors);
  else o += format(", \"wavefronts\": %llu, \"ideal_wavefronts\": %llu", (unsigned long long)s.wavefronts,
                   (unsigned long long)s.ideal);
  o += format(", \"requests_by_width\": {\"1\": %llu, \"2\": %llu, \"4\": %llu, \"8\": %llu, \"16\": %llu}}",
              (unsigned long long)s.width_requests[0], (unsigned long long)s.width_requests[1],
              (unsigned long long)s.width_requests[2], (unsigned long long)s.width_requests[3],
              (unsigned long long)s.width_requests[4]);
  return o;
}

std::string launch_json() {
  Runtime& r = R();
  std::string o = "{\"kernel\": " + json_string(r.kernel);
  o += format(", \"grid\": [%u, %u, %u], \"threads\": %d, \"blocks\": %llu, \"shared_bytes\": %zu", r.grid.x,
              r.grid.y, r.grid.z, r.threads, (unsigned long long)r.blocks, r.shared_peak);
  o += ", \"counted\": ";
  o += r.cfg.count ? "true" : "false";
  o += ", \"global_load\": " + stats_json(r.stats[0][kLoad], true);
  o += format(", \"global_load_unique_sectors\": %zu", r.sectors[kLoad].size());
  o += ", \"global_store\": " + stats_json(r.stats[0][kStore], true);
  o += format(", \"global_store_unique_sectors\": %zu", r.sectors[kStore].size());
  o += ", \"shared_load\": " + stats_json(r.stats[1][kLoad], false);
  o += ", \"shared_store\": " + stats_json(r.stats[1][kStore], false);
  o += format(", \"mma\": %llu, \"ldmatrix\": %llu, \"shuffles\": %llu, \"votes\": %llu, \"syncwarps\": %llu, "
              "\"barriers\": %llu, \"nonuniform_requests\": %llu",
              (unsigned long long)r.mma, (unsigned long long)r.ldmatrix, (unsigned long long)r.shuffles,
              (unsigned long long)r.votes, (unsigned long long)r.syncwarps, (unsigned long long)r.barriers,
              (unsigned long long)r.nonuniform);
  o += ", \"nonuniform_examples\": [";
  for (size_t i = 0; i < r.nonuniform_examples.size(); ++i)
    o += (i ? ", " : "") + json_string(r.nonuniform_examples[i]);
  o += "], \"error\": ";
  o += r.error.empty() ? "null" : json_string(r.error);
  return o + "}";
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Entry points for the headers
// ------------------------------------------------------------------------------------------------
void resolve(const void* p, const char** lo, const char** hi) {
  uintptr_t a, b;
  if (p != nullptr && find_alloc(reinterpret_cast<uintptr_t>(p), &a, &b)) {
    *lo = reinterpret_cast<const char*>(a);
    *hi = reinterpret_cast<const char*>(b);
  } else {
    *lo = *hi = nullptr;
  }
}

void global_access(const void* addr, unsigned size, unsigned kind, const void* lo, const void* hi) {
  Runtime& r = R();
  if (!r.in_kernel || r.cur < 0) return;  // host code touching memory: not the kernel's traffic
  const void* site = __builtin_return_address(0);
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  if (r.cfg.memcheck) {
    const char* what = kind == kLoad ? "load" : "store";
    uintptr_t l = reinterpret_cast<uintptr_t>(lo), h = reinterpret_cast<uintptr_t>(hi);
    if (l == 0 && h == 0) {
      if (addr == nullptr)
        fail("memcheck", format("%s: global %s of %u bytes through a null pointer", where(r.cur).c_str(), what, size));
      if (!find_alloc(a, &l, &h))
        fail("memcheck", format("%s: global %s of %u bytes at %p, which is in no tensor the emulator knows (made "
                                "before it loaded? pass it to emu.track)",
                                where(r.cur).c_str(), what, size, addr));
    }
    if (a < l || a + size > h) {
      const std::string rel = a < l ? format("%zu bytes before its start", static_cast<size_t>(l - a))
                                    : format("%zu bytes past its end", static_cast<size_t>(a + size - h));
      fail("memcheck", format("%s: global %s of %u bytes at %p is out of bounds of the %zu-byte tensor at %p: %s "
                              "(access at %s)",
                              where(r.cur).c_str(), what, size, addr, static_cast<size_t>(h - l),
                              reinterpret_cast<void*>(l), rel.c_str(), site_name(site).c_str()));
    }
    if ((size & (size - 1)) == 0 && a % size != 0)
      fail("memcheck", format("%s: misaligned global %s of %u bytes at %p (access at %s)", where(r.cur).c_str(), what,
                              size, addr, site_name(site).c_str()));
  }
  if (r.cfg.count) r.fibers[r.cur].log.push_back(Rec{site, a, size, 0, static_cast<uint8_t>(kind)});
}

void shared_access(const void* addr, unsigned size, unsigned kind) {
  Runtime& r = R();
  if (!r.in_kernel || r.cur < 0) return;
  const void* site = __builtin_return_address(0);
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  shared_check(r.cur, a, size, kind);
  if (r.cfg.count) r.fibers[r.cur].log.push_back(Rec{site, a, size, 1, static_cast<uint8_t>(kind)});
}

void shared_read_as(unsigned lane, const void* addr, unsigned size) {
  Runtime& r = R();
  shared_check((r.cur / 32) * 32 + static_cast<int>(lane), reinterpret_cast<uintptr_t>(addr), size, kLoad);
}

void count_ldmatrix(const void* const* rows, unsigned mask) {
  Runtime& r = R();
  if (!r.cfg.count) return;
  uintptr_t addr[32];
  unsigned lanes[32];
  int n = 0;
  for (unsigned l = 0; l < 32; ++l)
    if (mask >> l & 1) {
      addr[n] = reinterpret_cast<uintptr_t>(rows[l]);
      lanes[n++] = l;
    }
  add_request(1, kLoad, 16, addr, lanes, n);
}

void* shared_slot(SharedSlot* slot, size_t bytes, size_t align) {
  Runtime& r = R();
  if (!r.in_kernel) throw std::runtime_error("cuda_emu: AK_SHARED outside a kernel");
  if (slot->block != r.block_serial) {
    const size_t off = (r.arena_used + align - 1) / align * align;
    if (off + bytes > kStaticSharedLimit)
      fail("memcheck", format("%s: AK_SHARED %s (%zu bytes) takes the block's static shared memory past 48 KB",
                              where(r.cur).c_str(), slot->name, bytes));
    r.arena_used = off + bytes;
    r.shared_peak = std::max(r.shared_peak, r.arena_used);
    std::memset(r.arena + off, 0xff, bytes);  // poison: NaN as floats, -1 as integers
    slot->ptr = r.arena + off;
    slot->block = r.block_serial;
    r.allocs.push_back(SharedAlloc{slot->name, off, bytes});
  }
  return slot->ptr;
}

void barrier(const char* file, unsigned line) {
  Runtime& r = R();
  if (!r.in_kernel || r.cur < 0) throw std::runtime_error("cuda_emu: __syncthreads outside a kernel");
  Fiber& f = r.fibers[r.cur];
  f.file = file;
  f.line = line;
  yield(kAtBarrier);
}

void fail_lane(const char* check, int lane, const char* what, int other) {
  Runtime& r = R();
  const int tid = (r.cur / 32) * 32 + lane;
  fail(check, format("%s: %s%s", where(tid).c_str(), what, other >= 0 ? format(" (lane %d)", other).c_str() : ""));
}

void warp_collective(CollectiveKind kind, unsigned mask, const void* in, unsigned in_bytes, void* out,
                     unsigned out_bytes, Combine combine, const void* arg, const char* file, unsigned line) {
  Runtime& r = R();
  if (!r.in_kernel || r.cur < 0) throw std::runtime_error("cuda_emu: a warp collective outside a kernel");
  const int tid = r.cur, w = tid / 32, lane = tid % 32;
  Warp& W = r.warps[w];
  Fiber& f = r.fibers[tid];
  f.file = file;
  f.line = line;
  const unsigned need = mask & W.exist;
  if (!(mask >> lane & 1))
    fail("synccheck", format("%s: calls %s (%s:%u) with a mask 0x%08x that leaves out its own lane",
                             where(tid).c_str(), collective_name(kind), file, line, mask));
  if (need & W.done) {
    const int gone = __builtin_ctz(need & W.done);
    fail("synccheck", format("%s: %s (%s:%u) waits for lane %d of its mask, which has exited", where(tid).c_str(),
                             collective_name(kind), file, line, gone));
  }
  if (W.arrived == 0) {
    W.op_kind = kind;
    W.op_mask = mask;
    W.in_bytes = in_bytes;
    W.out_bytes = out_bytes;
    W.file = file;
    W.line = line;
  } else if (W.op_kind != kind || W.op_mask != mask) {
    fail("synccheck", format("%s: lanes of warp %d meet in different warp collectives: %s with mask 0x%08x "
                             "(%s:%u) and %s with mask 0x%08x (%s:%u)",
                             where(tid).c_str(), w, collective_name(W.op_kind), W.op_mask, W.file, W.line,
                             collective_name(kind), mask, file, line));
  }
  if (in_bytes) std::memcpy(W.in + lane * in_bytes, in, in_bytes);
  W.arrived |= 1u << lane;
  if (W.arrived == need) {
    flush_warp(w);
    if (combine) combine(W.in, W.out, need, arg);
    // The collective orders what its lanes did before it against what they do after, if all the
    // warp's live lanes took part (a partial mask orders nothing here: conservative).
    if (need == (W.exist & ~W.done)) ++W.epoch;
    switch (kind) {
      case kSyncwarp: ++r.syncwarps; break;
      case kShuffle: ++r.shuffles; break;
      case kVote: ++r.votes; break;
      case kMma: ++r.mma; break;
      case kLdmatrix: ++r.ldmatrix; break;
    }
    for (int l = 0; l < 32; ++l)
      if ((need >> l & 1) && l != lane) r.fibers[32 * w + l].state = kRunnable;
    W.arrived = 0;
    W.op_kind = -1;
  } else {
    yield(kInCollective);
  }
  if (out_bytes) std::memcpy(out, W.out + lane * out_bytes, out_bytes);
}

int lane_id() { return R().cur % 32; }
bool in_kernel() { return R().in_kernel; }
int multiprocessors() { return R().cfg.multiprocessors; }

void run_launch(const void* kernel, Body body, void* ctx, dim3 grid, int threads) {
  Runtime& r = R();
  std::lock_guard<std::mutex> lock(r.launch_mutex);
  if (r.in_kernel) throw std::runtime_error("cuda_emu: a kernel launched from a kernel");
  const std::string name = kernel_name(kernel);
  if (threads < 1 || threads > kMaxThreads || grid.x < 1 || grid.x > 0x7fffffffu || grid.y < 1 || grid.y > 65535 ||
      grid.z < 1 || grid.z > 65535)
    throw std::runtime_error(format("cuda_emu: invalid configuration argument launching %s: grid (%u,%u,%u), %d "
                                    "threads per block",
                                    name.c_str(), grid.x, grid.y, grid.z, threads));
  r.kernel = name;
  r.body = body;
  r.ctx = ctx;
  r.threads = threads;
  r.grid = grid;
  r.error.clear();
  reset_counts();
  if (r.fibers.size() < static_cast<size_t>(threads)) r.fibers.resize(threads);
  if (r.warps.size() < static_cast<size_t>((threads + 31) / 32)) r.warps.resize((threads + 31) / 32);
  if (r.arena == nullptr) {
    r.arena = static_cast<unsigned char*>(aligned_alloc(128, kArenaBytes));
    r.shadow.resize(kArenaBytes);
  }
  const dim3 saved_dim = blockDim, saved_grid = gridDim;
  blockDim = dim3(static_cast<unsigned>(threads));
  gridDim = grid;
  for (unsigned z = 0; z < grid.z && r.error.empty(); ++z)
    for (unsigned y = 0; y < grid.y && r.error.empty(); ++y)
      for (unsigned x = 0; x < grid.x && r.error.empty(); ++x) run_block(dim3(x, y, z));
  blockDim = saved_dim;
  gridDim = saved_grid;
  threadIdx = blockIdx = dim3(0);
  if (r.records.size() >= 4096) {
    r.records.erase(r.records.begin());
    ++r.dropped;
  }
  r.records.push_back(launch_json());
  if (!r.error.empty()) throw std::runtime_error(r.error);
}

}  // namespace detail

void track(const void* p, size_t bytes) {
  if (p == nullptr || bytes == 0) return;
  detail::Registry& g = detail::reg();
  std::lock_guard<std::mutex> lock(g.m);
  g.live[reinterpret_cast<uintptr_t>(p)] = bytes;
}

void untrack(const void* p) {
  detail::Registry& g = detail::reg();
  std::lock_guard<std::mutex> lock(g.m);
  g.live.erase(reinterpret_cast<uintptr_t>(p));
}

}  // namespace emu

#pragma GCC visibility pop

// ------------------------------------------------------------------------------------------------
// C entry points for Python (ctypes; cuda_emu/runtime.py). The strings returned stay valid until
// the next call.
// ------------------------------------------------------------------------------------------------
extern "C" {

__attribute__((visibility("default"))) const char* ak_emu_launches_json() {
  auto& r = emu::detail::R();
  std::lock_guard<std::mutex> lock(r.launch_mutex);
  r.json = "[";
  for (size_t i = 0; i < r.records.size(); ++i) r.json += (i ? ",\n" : "") + r.records[i];
  r.json += "]";
  return r.json.c_str();
}

__attribute__((visibility("default"))) unsigned long long ak_emu_dropped() { return emu::detail::R().dropped; }

__attribute__((visibility("default"))) void ak_emu_clear() {
  auto& r = emu::detail::R();
  std::lock_guard<std::mutex> lock(r.launch_mutex);
  r.records.clear();
  r.dropped = 0;
}

// Each flag: 1 on, 0 off, -1 unchanged; multiprocessors: > 0 sets it.
__attribute__((visibility("default"))) void ak_emu_configure(int memcheck, int initcheck, int racecheck,
                                                             int synccheck, int count, int multiprocessors) {
  auto& r = emu::detail::R();
  std::lock_guard<std::mutex> lock(r.launch_mutex);
  auto set = [](bool& b, int v) {
    if (v >= 0) b = v != 0;
  };
  set(r.cfg.memcheck, memcheck);
  set(r.cfg.initcheck, initcheck);
  set(r.cfg.racecheck, racecheck);
  set(r.cfg.synccheck, synccheck);
  set(r.cfg.count, count);
  if (multiprocessors > 0) r.cfg.multiprocessors = multiprocessors;
}

__attribute__((visibility("default"))) const char* ak_emu_config_json() {
  auto& r = emu::detail::R();
  std::lock_guard<std::mutex> lock(r.launch_mutex);
  const auto& c = r.cfg;
  r.json = emu::detail::format(
      "{\"memcheck\": %s, \"initcheck\": %s, \"racecheck\": %s, \"synccheck\": %s, \"count\": %s, "
      "\"multiprocessors\": %d}",
      c.memcheck ? "true" : "false", c.initcheck ? "true" : "false", c.racecheck ? "true" : "false",
      c.synccheck ? "true" : "false", c.count ? "true" : "false", c.multiprocessors);
  return r.json.c_str();
}

__attribute__((visibility("default"))) void ak_emu_track(const void* p, unsigned long long bytes) {
  emu::track(p, static_cast<size_t>(bytes));
}

__attribute__((visibility("default"))) void ak_emu_untrack(const void* p) { emu::untrack(p); }

// Whether [p, p + bytes) lies in one tracked allocation (tests of the tracking allocator).
__attribute__((visibility("default"))) int ak_emu_is_tracked(const void* p, unsigned long long bytes) {
  const char *lo, *hi;
  emu::detail::resolve(p, &lo, &hi);
  return lo != nullptr && static_cast<const char*>(p) + bytes <= hi;
}
}

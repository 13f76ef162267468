// csrc/mem.h's names as checked types (AK_EMU_CHECKED_MEMORY): every access through them is
// bounds-checked, race- and init-checked (shared memory) and counted. Part of cuda_emu.h.
//
//   gptr<T>      a fat pointer: the address and the bounds of the tracked allocation (tensor
//                storage) it was made from. p[i] and *p check [addr, addr + sizeof(T)) against
//                those bounds; pointer arithmetic, comparisons and `if (p)` work as on T*.
//                Reading through gptr<const T> yields a const T& (so p[i].x works); through
//                gptr<T>, a proxy that loads on conversion and stores on assignment.
//   AK_SHARED    an array of emu::Shared<T> (same size and layout as T) in the block's arena.
//   sptr<T>      emu::Shared<T>* (or const emu::Shared<T>* for const T).
//   ak_load<V>(p) / ak_store<V>(p, v): one access of sizeof(V) bytes through a gptr or an sptr (or
//                a raw pointer, unchecked).
//
// What does not carry over from raw pointers: `&p[i]` of a gptr<const T> is a raw const T*
// (write p + i); members of a struct element are reached through a copy (T v = p[i]; v.x), not
// p[i].x, except through gptr<const T>; a template parameter deduced from gptr<const T> does not
// accept a gptr<T> argument (convert it first).
#pragma once

#include "emu_core.h"

#pragma GCC visibility push(hidden)

namespace emu {

template <typename T>
class GPtr;

namespace detail {

// Largest power of two (<= 16) that divides both the size and the address: how a struct wider than
// a vector is split into counted accesses (the GPU moves at most 16 bytes per instruction).
inline unsigned access_chunk(const void* p, size_t size) {
  unsigned c = 16;
  while (c > 1 && ((size % c) != 0 || (reinterpret_cast<uintptr_t>(p) % c) != 0)) c >>= 1;
  return c;
}

template <size_t N>
__attribute__((always_inline)) inline void global_n(const void* p, unsigned kind, const void* lo, const void* hi) {
  if constexpr (N <= 16 && (N & (N - 1)) == 0) {
    global_access(p, N, kind, lo, hi);
  } else {
    const unsigned c = access_chunk(p, N);
    for (size_t o = 0; o < N; o += c) global_access(static_cast<const char*>(p) + o, c, kind, lo, hi);
  }
}

template <size_t N>
__attribute__((always_inline)) inline void shared_n(const void* p, unsigned kind) {
  if constexpr (N <= 16 && (N & (N - 1)) == 0) {
    shared_access(p, N, kind);
  } else {
    const unsigned c = access_chunk(p, N);
    for (size_t o = 0; o < N; o += c) shared_access(static_cast<const char*>(p) + o, c, kind);
  }
}

}  // namespace detail

// An element of a gptr<T> with T non-const: loads when read, stores when assigned.
template <typename T>
class GRef {
 public:
  __attribute__((always_inline)) GRef(T* p, const char* lo, const char* hi) : p_(p), lo_(lo), hi_(hi) {}
  __attribute__((always_inline)) operator T() const {
    detail::global_n<sizeof(T)>(p_, detail::kLoad, lo_, hi_);
    return *p_;
  }
  template <typename U>
    requires(std::is_arithmetic_v<U> && !std::is_same_v<U, T>)
  __attribute__((always_inline)) explicit operator U() const {
    return static_cast<U>(static_cast<T>(*this));
  }
  __attribute__((always_inline)) GRef& operator=(const T& v) {
    detail::global_n<sizeof(T)>(p_, detail::kStore, lo_, hi_);
    *p_ = v;
    return *this;
  }
  __attribute__((always_inline)) GRef& operator=(const GRef& o) { return *this = static_cast<T>(o); }
#define AK_EMU_COMPOUND(op)                                       \
  template <typename U>                                           \
  __attribute__((always_inline)) GRef& operator op##=(const U& v) { \
    return *this = static_cast<T>(static_cast<T>(*this) op v);    \
  }
  AK_EMU_COMPOUND(+)
  AK_EMU_COMPOUND(-)
  AK_EMU_COMPOUND(*)
  AK_EMU_COMPOUND(/)
  AK_EMU_COMPOUND(|)
  AK_EMU_COMPOUND(&)
  AK_EMU_COMPOUND(^)
#undef AK_EMU_COMPOUND
  // &p[i]: a checked pointer with p's bounds.
  GPtr<T> operator&() const;

 private:
  T* p_;
  const char* lo_;
  const char* hi_;
};

template <typename T>
class GPtr {
 public:
  using element_type = T;

  GPtr() = default;
  GPtr(std::nullptr_t) {}
  // From a raw pointer (a tensor's data_ptr): takes the bounds of the allocation holding it.
  GPtr(T* p) : p_(p) { detail::resolve(p, &lo_, &hi_); }
  template <typename U>
    requires(std::is_convertible_v<U*, T*> && !std::is_same_v<U, T>)
  GPtr(const GPtr<U>& o) : p_(o.raw()), lo_(o.lo()), hi_(o.hi()) {}
  GPtr(T* p, const char* lo, const char* hi) : p_(p), lo_(lo), hi_(hi) {}

  // The address, unchecked: for host code and for handing on to raw-form code, never to read.
  T* raw() const { return p_; }
  const char* lo() const { return lo_; }
  const char* hi() const { return hi_; }

  explicit operator bool() const { return p_ != nullptr; }
  bool operator!() const { return p_ == nullptr; }
  friend bool operator==(const GPtr& a, const GPtr& b) { return a.p_ == b.p_; }
  friend bool operator==(const GPtr& a, std::nullptr_t) { return a.p_ == nullptr; }
  friend auto operator<=>(const GPtr& a, const GPtr& b) { return a.p_ <=> b.p_; }

  template <typename I>
    requires(std::is_integral_v<I> && !std::is_void_v<T>)
  GPtr operator+(I n) const {
    return GPtr(p_ + n, lo_, hi_);
  }
  template <typename I>
    requires(std::is_integral_v<I> && !std::is_void_v<T>)
  friend GPtr operator+(I n, const GPtr& p) {
    return p + n;
  }
  template <typename I>
    requires(std::is_integral_v<I> && !std::is_void_v<T>)
  GPtr operator-(I n) const {
    return GPtr(p_ - n, lo_, hi_);
  }
  std::ptrdiff_t operator-(const GPtr& o) const
    requires(!std::is_void_v<T>)
  {
    return p_ - o.p_;
  }
  template <typename I>
    requires(std::is_integral_v<I> && !std::is_void_v<T>)
  GPtr& operator+=(I n) {
    p_ += n;
    return *this;
  }
  template <typename I>
    requires(std::is_integral_v<I> && !std::is_void_v<T>)
  GPtr& operator-=(I n) {
    p_ -= n;
    return *this;
  }
  GPtr& operator++()
    requires(!std::is_void_v<T>)
  {
    ++p_;
    return *this;
  }
  GPtr& operator--()
    requires(!std::is_void_v<T>)
  {
    --p_;
    return *this;
  }
  GPtr operator++(int)
    requires(!std::is_void_v<T>)
  {
    GPtr o = *this;
    ++p_;
    return o;
  }
  GPtr operator--(int)
    requires(!std::is_void_v<T>)
  {
    GPtr o = *this;
    --p_;
    return o;
  }

  template <typename I>
    requires(std::is_integral_v<I> && !std::is_void_v<T>)
  __attribute__((always_inline)) decltype(auto) operator[](I i) const {
    return at(p_ + i);
  }
  __attribute__((always_inline)) decltype(auto) operator*() const
    requires(!std::is_void_v<T>)
  {
    return at(p_);
  }

 private:
  __attribute__((always_inline)) decltype(auto) at(T* q) const {
    if constexpr (std::is_const_v<T>) {
      detail::global_n<sizeof(T)>(q, detail::kLoad, lo_, hi_);
      return static_cast<T&>(*q);
    } else {
      return GRef<T>(q, lo_, hi_);
    }
  }

  T* p_ = nullptr;
  const char* lo_ = nullptr;
  const char* hi_ = nullptr;
};

template <typename T>
GPtr<T> GRef<T>::operator&() const {
  return GPtr<T>(p_, lo_, hi_);
}

// An element of an AK_SHARED array: the value itself (same size, alignment and bytes as T, so
// addresses, vector accesses and banks are the GPU's), checked and counted when read or written.
template <typename T>
struct Shared {
  static_assert(std::is_trivially_copyable_v<T>, "AK_SHARED holds trivially copyable elements");
  T v_;

  __attribute__((always_inline)) operator T() const {
    detail::shared_n<sizeof(T)>(this, detail::kLoad);
    return v_;
  }
  template <typename U>
    requires(std::is_arithmetic_v<U> && !std::is_same_v<U, T>)
  __attribute__((always_inline)) explicit operator U() const {
    return static_cast<U>(static_cast<T>(*this));
  }
  // For struct elements (members are reached through a copy: T v = s.get(); v.x).
  __attribute__((always_inline)) T get() const { return static_cast<T>(*this); }
  __attribute__((always_inline)) Shared& operator=(const T& v) {
    detail::shared_n<sizeof(T)>(this, detail::kStore);
    v_ = v;
    return *this;
  }
  __attribute__((always_inline)) Shared& operator=(const Shared& o) { return *this = static_cast<T>(o); }
#define AK_EMU_COMPOUND(op)                                          \
  template <typename U>                                              \
  __attribute__((always_inline)) Shared& operator op##=(const U& v) { \
    return *this = static_cast<T>(static_cast<T>(*this) op v);       \
  }
  AK_EMU_COMPOUND(+)
  AK_EMU_COMPOUND(-)
  AK_EMU_COMPOUND(*)
  AK_EMU_COMPOUND(/)
  AK_EMU_COMPOUND(|)
  AK_EMU_COMPOUND(&)
  AK_EMU_COMPOUND(^)
  AK_EMU_COMPOUND(<<)
  AK_EMU_COMPOUND(>>)
#undef AK_EMU_COMPOUND
};

// Typed arena storage for AK_SHARED(type, name, dims).
template <typename A>
A& shared_array(detail::SharedSlot& slot) {
  return *static_cast<A*>(detail::shared_slot(&slot, sizeof(A), alignof(A) < 16 ? 16 : alignof(A)));
}

}  // namespace emu

namespace alexnet_kernels {

template <typename T>
using gptr = emu::GPtr<T>;
template <typename T>
using sptr = std::conditional_t<std::is_const_v<T>, const emu::Shared<std::remove_const_t<T>>*,
                                emu::Shared<T>*>;

template <typename T, typename U>
emu::GPtr<T> gptr_cast(const emu::GPtr<U>& p) {
  return emu::GPtr<T>(static_cast<T*>(p.raw()), p.lo(), p.hi());
}
template <typename T, typename U>
emu::GPtr<T> gptr_cast(U* p) {
  return emu::GPtr<T>(static_cast<T*>(p));
}

// sizeof(V) bytes at p, which is aligned to sizeof(V): through a gptr or an sptr, one checked,
// counted access; through a raw pointer, unchecked (raw forms).
template <typename V, typename T>
__attribute__((always_inline)) inline V ak_load(const emu::GPtr<T>& p) {
  emu::detail::global_n<sizeof(V)>(p.raw(), emu::detail::kLoad, p.lo(), p.hi());
  V v;
  std::memcpy(&v, static_cast<const void*>(p.raw()), sizeof(V));
  return v;
}
template <typename V, typename T>
__attribute__((always_inline)) inline V ak_load(const emu::Shared<T>* p) {
  emu::detail::shared_n<sizeof(V)>(p, emu::detail::kLoad);
  V v;
  std::memcpy(&v, static_cast<const void*>(p), sizeof(V));
  return v;
}
template <typename V, typename T>
inline V ak_load(const T* p) {
  return *reinterpret_cast<const V*>(p);
}

template <typename V, typename T>
__attribute__((always_inline)) inline void ak_store(const emu::GPtr<T>& p, const V& v) {
  static_assert(!std::is_const_v<T>, "ak_store through a gptr<const T>");
  emu::detail::global_n<sizeof(V)>(p.raw(), emu::detail::kStore, p.lo(), p.hi());
  std::memcpy(static_cast<void*>(p.raw()), &v, sizeof(V));
}
template <typename V, typename T>
__attribute__((always_inline)) inline void ak_store(emu::Shared<T>* p, const V& v) {
  emu::detail::shared_n<sizeof(V)>(p, emu::detail::kStore);
  std::memcpy(static_cast<void*>(p), &v, sizeof(V));
}
template <typename V, typename T>
inline void ak_store(T* p, const V& v) {
  *reinterpret_cast<V*>(p) = v;
}

}  // namespace alexnet_kernels

#define AK_EMU_CAT2(a, b) a##b
#define AK_EMU_CAT(a, b) AK_EMU_CAT2(a, b)
// Each thread of the block executes the declaration and gets the same array, placed in the arena
// (poisoned, its shadow unwritten) by the first thread that reaches it in each block.
#define AK_SHARED(type, name, dims)                                                  \
  static ::emu::detail::SharedSlot AK_EMU_CAT(name, _ak_slot){0, nullptr, #name};  \
  using AK_EMU_CAT(name, _ak_type) = ::emu::Shared<type> dims;                      \
  AK_EMU_CAT(name, _ak_type)& name = ::emu::shared_array<AK_EMU_CAT(name, _ak_type)>(AK_EMU_CAT(name, _ak_slot))

#pragma GCC visibility pop

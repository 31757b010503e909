#pragma once

#include <concepts>
#include <type_traits>
#include <utility>

namespace connpool {

/// A factory for connections of type Conn: `f.create()` returns a new one (or throws).
/// Optional members, used when present: `bool validate(Conn&)`, `bool reset(Conn&)`,
/// `void destroy(Conn&)`. Members may be called from several threads at once.
template <class F, class Conn>
concept ConnectionFactory = requires(F& f) {
    { f.create() } -> std::convertible_to<Conn>;
};

namespace detail {

template <class F, class Conn>
concept has_validate = requires(F& f, Conn& c) {
    { f.validate(c) } -> std::convertible_to<bool>;
};
template <class F, class Conn>
concept has_reset = requires(F& f, Conn& c) {
    { f.reset(c) } -> std::convertible_to<bool>;
};
template <class F, class Conn>
concept has_destroy = requires(F& f, Conn& c) { f.destroy(c); };

// A factory "means" an optional member when it has something by that name: a member the pool
// would otherwise ignore (a wrong signature, a void reset) must not compile, or dirty or dead
// connections would be reused silently.
template <class F, class Conn>
concept names_validate = requires { &F::validate; } || requires(F& f, Conn& c) { f.validate(c); };
template <class F, class Conn>
concept names_reset = requires { &F::reset; } || requires(F& f, Conn& c) { f.reset(c); };
template <class F, class Conn>
concept names_destroy = requires { &F::destroy; };

/// The connection type a factory creates.
template <class F>
using connection_t = std::remove_cvref_t<decltype(std::declval<F&>().create())>;

/// Compiles only for a factory whose optional members all have the signatures the pool calls.
template <class F, class Conn>
constexpr bool check_factory() {
    static_assert(ConnectionFactory<F, Conn>,
                  "connpool::Pool<Conn, Factory>: Factory must have a member function create() "
                  "that returns a new Conn (or something convertible to Conn).");
    static_assert(!names_validate<F, Conn> || has_validate<F, Conn>,
                  "connpool::Pool<Conn, Factory>: Factory has a member named validate, but it is "
                  "not callable as `bool validate(Conn&)`; the pool would never call it and would "
                  "hand out dead connections. Fix its signature (or rename it).");
    static_assert(!names_reset<F, Conn> || has_reset<F, Conn>,
                  "connpool::Pool<Conn, Factory>: Factory has a member named reset, but it is not "
                  "callable as `bool reset(Conn&)` (it must say whether the connection can be "
                  "reused); the pool would never call it and would reuse dirty connections. Fix "
                  "its signature (or rename it).");
    static_assert(!names_destroy<F, Conn> || has_destroy<F, Conn>,
                  "connpool::Pool<Conn, Factory>: Factory has a member named destroy, but it is "
                  "not callable as `void destroy(Conn&)`; the pool would never call it and would "
                  "leak what it releases. Fix its signature (or rename it).");
    return true;
}

} // namespace detail
} // namespace connpool

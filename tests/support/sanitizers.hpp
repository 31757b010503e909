#pragma once

// Whether this test binary runs under AddressSanitizer or ThreadSanitizer, whose allocators keep
// freed memory (ASan's quarantine) and run everything several times slower: tests that measure
// memory or count trials adjust their bounds, never their claims.

namespace connpool::testing {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool sanitized = true;
#else
inline constexpr bool sanitized = false;
#endif
#else
inline constexpr bool sanitized = false;
#endif

} // namespace connpool::testing

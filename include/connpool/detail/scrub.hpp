#pragma once

// Keeping a known secret out of a message: the adapters build their errors from what the
// database's client library says, which may quote the password it was given.

#include <cstddef>
#include <string>
#include <string_view>

namespace connpool::detail {

/// The text that stands for a secret in messages.
inline constexpr std::string_view redacted = "***";

/// Returns `text` with every occurrence of `secret` replaced by "***" (nothing when it is empty).
[[nodiscard]] inline std::string scrub(std::string text, std::string_view secret) {
    if (secret.empty()) return text;
    for (std::size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at + redacted.size()))
        text.replace(at, secret.size(), redacted);
    return text;
}

} // namespace connpool::detail

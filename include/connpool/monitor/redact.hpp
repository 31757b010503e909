#pragma once

// The one place that decides what a sink may print. Every sink passes every text it did not
// make itself (job names, phases, errors, pool event details) through clean(), so a secret that
// reached an error message (a conninfo's password, a URL's user:password@) is masked the same
// way in the terminal, in JSON lines and in Prometheus labels.

#include <cctype>
#include <cstddef>
#include <string>
#include <string_view>

namespace connpool::monitor {

/// The text that replaces a secret.
inline constexpr std::string_view redacted = "***";

namespace detail {

inline bool ascii_iequal(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
    return true;
}

// Keys whose value is a secret in libpq conninfo strings, URLs' query strings and the like.
inline bool is_secret_key(std::string_view key) noexcept {
    for (std::string_view k : {"password", "passwd", "pwd", "pass", "secret", "token", "sslpassword", "api_key", "apikey"})
        if (ascii_iequal(key, k)) return true;
    return false;
}

inline bool is_key_char(char c) noexcept {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-';
}

} // namespace detail

/// Returns `text` with secrets masked: the value of `password=...` (and passwd, pwd, secret,
/// token, ...; quoted values too, as libpq writes them) and the password of `scheme://user:pw@`.
/// Everything else is kept as it is.
inline std::string redact(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    std::size_t i = 0;
    while (i < text.size()) {
        const char c = text[i];
        // key=value (also key = value and key: value) where key is a secret's name.
        if (detail::is_key_char(c) && (i == 0 || !detail::is_key_char(text[i - 1]))) {
            std::size_t k = i;
            while (k < text.size() && detail::is_key_char(text[k])) ++k;
            std::size_t v = k;
            if (v < text.size() && (text[v] == '"' || text[v] == '\'') && i > 0 && text[i - 1] == text[v]) ++v; // "key": in JSON
            while (v < text.size() && text[v] == ' ') ++v;
            if (v < text.size() && (text[v] == '=' || text[v] == ':') && detail::is_secret_key(text.substr(i, k - i)) &&
                !(text[v] == ':' && v + 1 < text.size() && text[v + 1] == '/')) {
                ++v;
                while (v < text.size() && text[v] == ' ') ++v;
                out.append(text.substr(i, v - i));
                std::size_t end = v;
                if (end < text.size() && (text[end] == '\'' || text[end] == '"')) {
                    const char quote = text[end++];
                    while (end < text.size() && text[end] != quote) end += text[end] == '\\' ? 2 : 1;
                    end = end < text.size() ? end + 1 : text.size();
                } else {
                    while (end < text.size() && text[end] != ' ' && text[end] != '&' && text[end] != ';' &&
                           text[end] != ',' && text[end] != '\n' && text[end] != '\t' && text[end] != ')')
                        ++end;
                }
                out.append(redacted);
                i = end;
                continue;
            }
        }
        // scheme://user:password@host
        if (c == ':' && i + 2 < text.size() && text[i + 1] == '/' && text[i + 2] == '/') {
            const std::size_t user = i + 3;
            std::size_t at = user;
            while (at < text.size() && text[at] != '@' && text[at] != '/' && text[at] != ' ' && text[at] != '\n') ++at;
            if (at < text.size() && text[at] == '@') {
                const std::size_t colon = text.find(':', user);
                if (colon != std::string_view::npos && colon < at) {
                    out.append(text.substr(i, colon + 1 - i));
                    out.append(redacted);
                    i = at; // the '@' is copied next
                    continue;
                }
            }
        }
        out += c;
        ++i;
    }
    return out;
}

/// Returns `text` as valid UTF-8: each byte that is not part of a well-formed sequence becomes
/// U+FFFD, because Prometheus and JSON readers reject invalid UTF-8 (a job name is user data).
inline std::string valid_utf8(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    std::size_t i = 0;
    while (i < text.size()) {
        const auto b = static_cast<unsigned char>(text[i]);
        std::size_t n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
        bool ok = n != 0 && i + n <= text.size() && !(n == 2 && b < 0xC2) && !(n == 4 && b > 0xF4);
        for (std::size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(text[i + k]) >> 6) == 0x2;
        if (ok && n == 3) {
            const auto b1 = static_cast<unsigned char>(text[i + 1]);
            ok = !(b == 0xE0 && b1 < 0xA0) && !(b == 0xED && b1 >= 0xA0); // overlong, surrogates
        }
        if (ok && n == 4) {
            const auto b1 = static_cast<unsigned char>(text[i + 1]);
            ok = !(b == 0xF0 && b1 < 0x90) && !(b == 0xF4 && b1 >= 0x90);
        }
        if (!ok) {
            out += "\xEF\xBF\xBD";
            ++i;
            continue;
        }
        out.append(text.substr(i, n));
        i += n;
    }
    return out;
}

/// Returns what a sink may show of `text`: redact()ed and valid UTF-8.
inline std::string clean(std::string_view text) { return valid_utf8(redact(text)); }

} // namespace connpool::monitor

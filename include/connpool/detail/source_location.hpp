#pragma once

#include <cstdint>
#include <version> // __cpp_lib_source_location

#if defined(__cpp_lib_source_location)
#include <source_location>
#endif

namespace connpool {

#if defined(__cpp_lib_source_location)
/// The call site type acquire() records: std::source_location where the library has it.
using source_location = std::source_location;
#else
/// The call site type acquire() records. A stand-in for std::source_location, with the same
/// members, for toolchains whose standard library lacks it (clang 14 with libstdc++ 12).
class source_location {
public:
    /// Returns the location of the call that evaluates this default argument.
    static constexpr source_location current(const char* file = __builtin_FILE(),
                                             const char* function = __builtin_FUNCTION(),
                                             std::uint_least32_t line = __builtin_LINE(),
                                             std::uint_least32_t column = __builtin_COLUMN()) noexcept {
        source_location loc;
        loc.file_ = file;
        loc.function_ = function;
        loc.line_ = line;
        loc.column_ = column;
        return loc;
    }
    /// Creates an unknown location.
    constexpr source_location() noexcept = default;
    /// Returns the source file's name.
    [[nodiscard]] constexpr const char* file_name() const noexcept { return file_; }
    /// Returns the enclosing function's name.
    [[nodiscard]] constexpr const char* function_name() const noexcept { return function_; }
    /// Returns the line number.
    [[nodiscard]] constexpr std::uint_least32_t line() const noexcept { return line_; }
    /// Returns the column number.
    [[nodiscard]] constexpr std::uint_least32_t column() const noexcept { return column_; }

private:
    const char* file_ = "";
    const char* function_ = "";
    std::uint_least32_t line_ = 0;
    std::uint_least32_t column_ = 0;
};
#endif

} // namespace connpool

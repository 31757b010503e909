#pragma once

// Reporting for connpool's fuzz targets: a short trace of the last steps, and a check
// that prints it and traps, so libFuzzer records the input as a crash.

#include <cstdarg> // va_list for the printf-style trace
#include <cstddef>
#include <cstdio>
#include <cstdlib> // getenv: CONNPOOL_FUZZ_TRACE

namespace connpool::fuzz {

/// The last steps of the current input, kept without allocating so that recording a step
/// costs a snprintf; printed only when a check fails. With the environment variable
/// CONNPOOL_FUZZ_TRACE set, every step is also printed as it starts, and its result when
/// known (to read what an input does, or which step a sanitizer report comes from).
class Trace {
public:
    static constexpr std::size_t kSteps = 48;      // how many recent steps a report shows
    static constexpr std::size_t kLineLength = 200; // longer lines are cut

    /// Starts a new input: forgets the previous one's steps and records its set-up line.
    void begin(const char* format, ...) __attribute__((format(printf, 2, 3))) {
        steps_ = 0;
        va_list args;
        va_start(args, format);
        std::vsnprintf(setup_, sizeof setup_, format, args);
        va_end(args);
        if (verbose_) std::fprintf(stderr, "input: %s\n", setup_);
    }


    /// Records the next step (an operation and its arguments).
    void step(const char* format, ...) __attribute__((format(printf, 2, 3))) {
        char* line = lines_[steps_ % kSteps];
        const int n = std::snprintf(line, kLineLength, "step %zu: ", steps_);
        va_list args;
        va_start(args, format);
        std::vsnprintf(line + n, kLineLength - static_cast<std::size_t>(n), format, args);
        va_end(args);
        ++steps_;
        if (verbose_) std::fprintf(stderr, "  %s\n", line);
    }

    /// Appends what the current step observed (its result) to its line.
    void result(const char* format, ...) __attribute__((format(printf, 2, 3))) {
        if (steps_ == 0) return;
        char* line = lines_[(steps_ - 1) % kSteps];
        std::size_t used = 0;
        while (used < kLineLength && line[used] != '\0') ++used;
        if (used + 1 >= kLineLength) return;
        va_list args;
        va_start(args, format);
        std::vsnprintf(line + used, kLineLength - used, format, args);
        va_end(args);
        if (verbose_) std::fprintf(stderr, "   %s\n", line + used);
    }

    /// Returns how many steps this input has run so far.
    [[nodiscard]] std::size_t steps() const noexcept { return steps_; }

    /// Prints the failed check, the set-up and the last steps to stderr, then traps.
    [[noreturn]] void fail(const char* file, int line, const char* expression, const char* format,
                           ...) const __attribute__((format(printf, 5, 6))) {
        std::fprintf(stderr, "\n==== connpool fuzz check failed: %s\n     at %s:%d\n     ", expression,
                     file, line);
        va_list args;
        va_start(args, format);
        std::vfprintf(stderr, format, args);
        va_end(args);
        std::fprintf(stderr, "\n==== input: %s\n", setup_);
        const std::size_t first = steps_ > kSteps ? steps_ - kSteps : 0;
        if (first > 0) std::fprintf(stderr, "     (%zu earlier steps not shown)\n", first);
        for (std::size_t i = first; i < steps_; ++i) std::fprintf(stderr, "     %s\n", lines_[i % kSteps]);
        std::fprintf(stderr, "==== the last step is the one that failed\n");
        std::fflush(stderr);
        __builtin_trap();
    }

private:
    char setup_[kLineLength] = {};
    char lines_[kSteps][kLineLength] = {};
    std::size_t steps_ = 0;
    bool verbose_ = std::getenv("CONNPOOL_FUZZ_TRACE") != nullptr;
};

} // namespace connpool::fuzz

/// Fails the fuzz input, printing `trace` and a printf-style message, unless `condition` holds.
#define CONNPOOL_FUZZ_CHECK(trace, condition, ...) \
    ((condition) ? void(0) : (trace).fail(__FILE__, __LINE__, #condition, __VA_ARGS__))

#pragma once

// Decoding for connpool's model-based fuzz targets: the input is a set-up followed by a
// sequence of operations, each one opcode byte and then that operation's own arguments.
// FuzzedDataProvider hands out integers from the end of the input and raw bytes from the
// front; the targets only take integers, so an input is read back to front.

#include <fuzzer/FuzzedDataProvider.h>

#include <array>
#include <cstddef>
#include <cstdint>

namespace connpool::fuzz {

/// One operation a harness can run: its name (for the trace) and the member that decodes
/// its arguments, runs it on the real object and on the model, and compares them.
template <class Harness>
struct Operation {
    const char* name;
    void (Harness::*run)();
};

/// Opcodes are an input byte modulo this, so a table may grow up to this many entries
/// without changing what existing opcodes (and so the committed corpus) mean. Opcodes past
/// the end of a table run the harness's observe().
inline constexpr std::size_t kOpcodeSpace = 16;

/// An upper bound on the steps of one input, so that no input runs for long.
inline constexpr std::size_t kMaxSteps = 4096;

/// Runs operations decoded from `input` until it is used up: each step picks an operation
/// by opcode, runs it, then calls `harness.after_step()` (the invariant and model checks).
template <class Harness, std::size_t N>
void run_operations(Harness& harness, FuzzedDataProvider& input,
                    const std::array<Operation<Harness>, N>& table) {
    static_assert(N > 0 && N <= kOpcodeSpace,
                  "run_operations: an operation table needs 1 to kOpcodeSpace entries; widen "
                  "kOpcodeSpace (which re-maps the committed corpus) to add more.");
    for (std::size_t step = 0; step < kMaxSteps && input.remaining_bytes() > 0; ++step) {
        const std::size_t opcode = input.ConsumeIntegral<std::uint8_t>() % kOpcodeSpace;
        if (opcode < N) {
            (harness.*table[opcode].run)();
        } else {
            harness.observe();
        }
        harness.after_step();
    }
}

} // namespace connpool::fuzz

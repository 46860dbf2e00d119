// For tests that drive an Asio loop themselves: runs `io` until `cond`
// holds or `limit` passes, and says whether it holds. An io_context that ran
// out of work is restarted, since a later step (the test's own) may add some.
#pragma once
#include <chrono>

#include "common/asio.h"

namespace axl::test_support {

template <typename F>
bool run_until(boost::asio::io_context& io, F cond,
               std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!cond() && std::chrono::steady_clock::now() < end) {
    if (io.stopped()) io.restart();
    io.run_for(std::chrono::milliseconds(5));
  }
  return cond();
}

}  // namespace axl::test_support

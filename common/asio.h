// Boost.Asio 1.74's awaitable.hpp uses std::exchange without including
// <utility>; g++ 12 in C++20 mode then fails.  Include Asio through here.
#pragma once
#include <utility>

#include <boost/asio.hpp>

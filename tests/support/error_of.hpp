#pragma once
// The message of the fp4kit::Error that `fn` throws; records a test failure when none is thrown.
#include <gtest/gtest.h>

#include <string>

#include "fp4kit/error.hpp"

namespace fp4kit::testing {

template <class F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no fp4kit::Error thrown";
  return {};
}

}  // namespace fp4kit::testing

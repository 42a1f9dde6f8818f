#pragma once
// A checkpoint's identity for the files made from it (the calibration stats): a hash of every
// tensor's name, dtype and shape and of its first bytes, so that a copy of the model (another
// path) matches and a different model of the same architecture (a fine-tune, another size) does
// not. Reads one page per tensor.
#include <string>

namespace fp4kit {

class Checkpoint;

// 16 hex digits.
std::string checkpoint_fingerprint(const Checkpoint& ckpt);

}  // namespace fp4kit

#include "fp4kit/quant/stream.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <set>
#include <string>

#include "fp4kit/error.hpp"
#include "fp4kit/numeric/nvfp4.hpp"
#include "fp4kit/quant/block_scales.hpp"
#include "fp4kit/quant/bmm_experts.hpp"
#include "fp4kit/quant/source_decode.hpp"
#include "fp4kit/quant/source_view.hpp"

namespace fp4kit {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// FP8 sources: amax from codes and block scales, without decoding (bit-identical).
float entry_amax(const Checkpoint& source, const PlanEntry& e) {
  try {
    return source_amax(source, e);
  } catch (const Error& err) {
    throw Error(fmt::format("module '{}' (source tensor '{}'): {}", e.name, e.source.tensor,
                            err.what()));
  }
}

// s2 of a weight group = global scale of the max amax over its members (spec section 3).
// Computed once, when the first member is reached; members are read again when quantized.
class GroupScales {
 public:
  GroupScales(const Plan& plan, const Checkpoint& source, ScaleForm form, float norm)
      : plan_(plan), source_(source), form_(form), norm_(norm) {}

  std::pair<float, float> amax_and_s2(size_t entry) {
    const PlanEntry& e = plan_.entries[entry];
    if (e.weight_group < 0) {
      const float a = entry_amax(source_, e);
      return {a, nvfp4_global_scale(a, form_, norm_)};
    }
    auto it = cache_.find(e.weight_group);
    if (it == cache_.end()) {
      float group_amax = 0;
      for (size_t m : plan_.groups[e.weight_group].members) {
        const float a = entry_amax(source_, plan_.entries[m]);
        own_amax_[m] = a;
        group_amax = std::max(group_amax, a);
      }
      it = cache_.emplace(e.weight_group, nvfp4_global_scale(group_amax, form_, norm_)).first;
    }
    return {own_amax_.at(entry), it->second};
  }

 private:
  const Plan& plan_;
  const Checkpoint& source_;
  ScaleForm form_;
  float norm_;
  std::map<int64_t, float> cache_;
  std::map<size_t, float> own_amax_;
};

// Asks the kernel to read the source tensors of the next entries (about `window` bytes ahead), so
// disk reads overlap with quantizing the current one instead of stalling the worker threads.
class ReadAhead {
 public:
  ReadAhead(const Plan& plan, const Checkpoint& source, const std::vector<size_t>& order,
            uint64_t window)
      : plan_(plan), source_(source), order_(order), window_(window) {}

  void advance(size_t position) {
    while (next_ < order_.size() && (next_ <= position || ahead_bytes_ < window_)) {
      const PlanEntry& e = plan_.entries[order_[next_]];
      if (e.action != Action::Drop && started_.insert(e.source.tensor).second) {
        const TensorInfo& info = source_.info(e.source.tensor);
        source_.file_of(e.source.tensor).prefetch(info);
        ahead_bytes_ += info.nbytes();
        sizes_.push_back({next_, info.nbytes()});
      }
      ++next_;
    }
    // Entries at or before `position` are being processed: no longer "ahead".
    while (!sizes_.empty() && sizes_.front().first <= position) {
      ahead_bytes_ -= sizes_.front().second;
      sizes_.pop_front();
    }
  }

 private:
  const Plan& plan_;
  const Checkpoint& source_;
  const std::vector<size_t>& order_;
  uint64_t window_;
  size_t next_ = 0;
  uint64_t ahead_bytes_ = 0;
  std::set<std::string> started_;
  std::deque<std::pair<size_t, uint64_t>> sizes_;
};

}  // namespace

std::vector<EntryResult> run_stream(const Plan& plan, const Checkpoint& source,
                                    const std::vector<size_t>& order,
                                    const std::vector<float>& input_scales,
                                    const QuantOptions& options, EntrySink& sink,
                                    const StreamProgress& progress) {
  std::vector<float> decoded;  // FP8 sources: one tensor's float32 values, reused
  GroupScales groups(plan, source, options.scale_form, options.global_norm);
  std::vector<EntryResult> results;
  results.reserve(order.size());
  ReadAhead read_ahead(plan, source, order, 64ull << 20);
  for (size_t position = 0; position < order.size(); ++position) {
    const size_t idx = order[position];
    read_ahead.advance(position);
    const PlanEntry& e = plan.entries[idx];
    if (e.action == Action::Drop) continue;
    const auto t0 = std::chrono::steady_clock::now();
    EntryResult r;
    r.entry = idx;
    if (e.action == Action::Keep) {
      const auto bytes = source.bytes(e.source.tensor);
      r.bytes_in = r.bytes_out = bytes.size();
      // Checked as it goes by (the pages are read for the copy anyway): quantized tensors refuse
      // NaN/Inf, kept ones are copied as they are and must not be copied without a word.
      const TensorInfo& info = source.info(e.source.tensor);
      r.nonfinite = count_nonfinite(bytes.data(), info.dtype, bytes.size() / dtype_size(info.dtype));
      sink.copied(idx, bytes);
    } else if (e.action == Action::Dequantize) {
      std::vector<uint8_t> bf16 = dequantize_to_bf16(source, e, decoded);
      r.bytes_in = e.source_bytes;
      r.bytes_out = bf16.size();
      r.nonfinite = count_nonfinite(bf16.data(), DType::BF16, bf16.size() / 2);
      sink.dequantized(idx, std::move(bf16));
      source.release(e.source.tensor);
      if (!e.source_scales.empty()) source.release(e.source_scales);
    } else {
      if (e.cols % kNvfp4Block != 0)
        throw Error(fmt::format("module '{}': K = {} is not a multiple of 16 (plan error)", e.name,
                                e.cols));
      auto [amax, s2] = groups.amax_and_s2(idx);
      QuantizedWeight q;
      q.s2 = s2;
      if (!options.weights_only) {
        if (e.input_group < 0 || static_cast<size_t>(e.input_group) >= input_scales.size() ||
            !(input_scales[e.input_group] > 0))
          throw Error(fmt::format("module '{}': no input_scale computed (internal error)", e.name));
        q.input_scale = input_scales[e.input_group];
      }
      if (e.bmm_experts > 0) {  // 3-D experts, one s2, written 3-D and streamed (spec 4)
        sink.bmm_begin(idx, s2, q.input_scale);
        r.error = bmm_quantize(
            source, e, s2, options, r.scales,
            [&](uint64_t x, std::vector<uint8_t>&& packed) {
              sink.bmm_packed(idx, std::move(packed), x + 1 == e.bmm_experts);
            },
            q.scales);
        r.bytes_out = e.bmm_experts * e.rows * e.cols * 9 / 16 + 4 +
                      (options.weights_only ? 0 : 4);
        sink.bmm_scales(idx, std::move(q.scales));
      } else {
        const SourceView v = decoded_view(source, e, decoded);
        q.packed.resize(v.rows * v.cols / 2);
        q.scales.resize(v.rows * v.cols / kNvfp4Block);
        try {
          r.scales = encode_weight(v, s2, options, e.name, q.packed.data(), q.scales.data());
        } catch (const Error& err) {
          throw Error(fmt::format("module '{}' (source tensor '{}'): {}", e.name,
                                  e.source.tensor, err.what()));
        }
        r.error = r.scales.error ? *r.scales.error
                                 : nvfp4_distortion(v.data, v.dtype, v.rows, v.cols,
                                                    q.packed.data(), q.scales.data(), s2);
      }
      if (!options.allow_destroyed && r.error.destroyed())
        throw Error(fmt::format(
            "module '{}' (source tensor '{}'): quantization destroys this tensor: relative RMSE "
            "{:.4f} ({} of {} values rounded to zero; amax {:.4g}, weight_scale_2 "
            "{:.4g}{}); nothing was written. Keep it unquantized (--exclude '{}'{}).",
            e.name, e.source.tensor, r.error.rel_rmse(), r.error.rounded_to_zero, r.error.count,
            amax, s2,
            e.weight_group >= 0 ? fmt::format(", shared with its group {}",
                                              plan.groups[e.weight_group].name)
                                : std::string(),
            e.name,
            e.weight_group >= 0 ? " and the other members of its group" : ""));
      r.bytes_in = e.source_bytes;
      r.amax = amax;
      r.s2 = s2;
      r.input_scale = q.input_scale;
      if (e.bmm_experts == 0) {
        r.bytes_out = q.packed.size() + q.scales.size() + 4 + (options.weights_only ? 0 : 4);
        sink.quantized(idx, std::move(q));
      }
      source.release(e.source.tensor);  // bounded RSS: the mapping's pages go back to the kernel
      if (!e.source_scales.empty()) source.release(e.source_scales);
    }
    r.seconds = seconds_since(t0);
    results.push_back(r);
    if (progress) progress(results.size(), order.size(), results.back());
  }
  return results;
}

}  // namespace fp4kit

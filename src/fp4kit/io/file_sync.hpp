#pragma once
// Durable small-file writes and directory syncs: what "fsync before rename" needs.
#include <filesystem>
#include <string_view>

namespace fp4kit {

// Creates/truncates `path`, writes `content`, fsyncs and closes. Throws fp4kit::Error naming it.
void write_file_synced(const std::filesystem::path& path, std::string_view content);
// fsyncs a directory so that the names created in it are durable. Throws fp4kit::Error.
void sync_directory(const std::filesystem::path& dir);
// fsyncs one existing file. Throws fp4kit::Error.
void sync_file(const std::filesystem::path& path);

}  // namespace fp4kit

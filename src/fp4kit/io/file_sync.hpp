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

namespace fp4kit {

// Writes `content` to a temporary name next to `path`, fsyncs it and renames it over `path`:
// readers see the old file or the complete new one, never a half-written one.
void write_file_atomic(const std::filesystem::path& path, std::string_view content);

}  // namespace fp4kit

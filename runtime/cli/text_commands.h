// The text side of the CLI: tokenize, detokenize, and the generation flags that generate shares
// (sampling, stopping, streaming --prompt text to stdout).
#pragma once

#include <string>
#include <vector>

#include "args.h"
#include "surf/runtime.h"

namespace surf::cli {

// --temperature --top-k --top-p --min-p --repetition-penalty --seed --stop --eos-id --ignore-eos --sample
extern const std::vector<Flag> kGenerationFlags;
GenerateOptions generation_options(const Args& a, int64_t max_new_tokens);

// Generates from raw-text prompts; with one prompt the new text goes to stdout as it is produced
// (flushed per token), with several each text is printed when all are done.
TextGeneration generate_prompts(Session& session, const std::vector<std::string>& prompts, GenerateOptions options);

int cmd_tokenize(const std::vector<std::string>& argv);
int cmd_detokenize(const std::vector<std::string>& argv);

}  // namespace surf::cli

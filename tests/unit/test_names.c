/* Unit test of proxy/common/names.c: Ollama's name rules (ollama-api.md §6). */
#include "check.h"
#include "names.h"

int main(void)
{
    char k[NAME_KEY_MAX];
    CHECK_INT(name_key("llama3", k, sizeof k), 0);
    CHECK_STR(k, "registry.ollama.ai/library/llama3:latest");
    CHECK(name_same("llama3", "llama3:latest"));
    CHECK(name_same("llama3", "library/llama3:latest"));
    CHECK(name_same("llama3", "registry.ollama.ai/library/llama3:latest"));
    CHECK(name_same("LLaMA3", "llama3:LATEST"));
    CHECK(name_same(" llama3 ", "llama3"));
    CHECK(!name_same("qwen3", "qwen3:8b"));
    CHECK(!name_same("a/llama3", "llama3"));
    CHECK(name_same("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
                    "HF.CO/bartowski/llama-3.2-1b-instruct-gguf:q4_k_m"));
    /* The tag is split at the last ':' after the last '/': a host port. */
    CHECK_INT(name_key("localhost:5000/ns/m", k, sizeof k), 0);
    CHECK_STR(k, "localhost:5000/ns/m:latest");
    CHECK_INT(name_display("library/llama3", k, sizeof k), 0);
    CHECK_STR(k, "llama3:latest");
    CHECK_INT(name_display("ns/m:7b", k, sizeof k), 0);
    CHECK_STR(k, "ns/m:7b");
    CHECK_INT(name_display("llama3@sha256:abc", k, sizeof k), 0);
    CHECK_STR(k, "llama3:latest");
    CHECK_INT(name_key("", k, sizeof k), -1);
    CHECK_INT(name_key("   ", k, sizeof k), -1);
    CHECK_INT(name_key("m:", k, sizeof k), -1);
    CHECK_INT(name_key("llama3", k, 8), -1);
    CHECK_STR(k, "");
    CHECK(!name_same("", ""));
    CHECK_DONE();
}

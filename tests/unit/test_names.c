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
    /* The bounds exactly: the key's 40 bytes and its NUL fit in 41, not 40. */
    CHECK_INT(name_key("llama3", k, 41), 0);
    CHECK_STR(k, "registry.ollama.ai/library/llama3:latest");
    CHECK_INT(name_key("llama3", k, 40), -1);
    CHECK_STR(k, "");
    CHECK_INT(name_display("ns/m:7b", k, 8), 0);
    CHECK_STR(k, "ns/m:7b");
    CHECK_INT(name_display("ns/m:7b", k, 7), -1);
    CHECK_STR(k, "");
    CHECK_INT(name_display("llama3", k, 0), -1);
    CHECK(!name_same("", ""));
    /* Found by the fuzzer: blanks before "@digest" are trimmed, and a blank
     * inside a name makes it no name (name_key is idempotent). */
    {
        char k1[NAME_KEY_MAX], k2[NAME_KEY_MAX];
        CHECK_INT(name_key("qwen2:0.5b @sha256:1", k1, sizeof k1), 0);
        CHECK_STR(k1, "registry.ollama.ai/library/qwen2:0.5b");
        CHECK_INT(name_key(k1, k2, sizeof k2), 0);
        CHECK_STR(k2, k1);
        CHECK_INT(name_key("library/ x", k1, sizeof k1), -1);
        CHECK_INT(name_key("my model", k1, sizeof k1), -1);
    }
    CHECK_DONE();
}

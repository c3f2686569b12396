/* wire.h - the framings of a streamed answer, one per API family that
 * Ollama speaks (CONTRACT.md, "Every wire format"). An endpoint's row
 * (front/router.c) names its format; the token counter (tokscan.h) reads
 * that format's usage fields, and an error after the reply has started
 * (reply.h, reply_stream_error) is written in that format, so that the
 * client's own library reports it. */
#ifndef PX_WIRE_H
#define PX_WIRE_H

enum wire_format {
    WIRE_NDJSON,    /* under /api/: JSON lines, eval_count and prompt_eval_count */
    WIRE_OPENAI,    /* /v1/chat/completions and friends: "data: {...}\n\n", usage */
    WIRE_RESPONSES, /* /v1/responses: "event: response.x\ndata: {...}\n\n" */
    WIRE_ANTHROPIC, /* /v1/messages: "event: message_x\ndata: {...}\n\n" */
    WIRE_NFORMATS
};

#endif

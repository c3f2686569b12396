#ifndef OP_VERSION_H
#define OP_VERSION_H
#define OP_VERSION "0.1.0"
#endif

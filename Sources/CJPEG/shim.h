#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

/* libjpeg's error_exit must not return, and its longjmp must never cross Swift frames: this wrapper sets the
   jump point in C, turns errors (and warnings, such as a file that ends early) into a message and a non-zero
   return, and frees what it allocated. */

#define LOP_JPEG_MESSAGE 256

typedef struct {
    struct jpeg_error_mgr manager;
    jmp_buf jump;
    char *message;
} lop_jpeg_errors;

static void lop_jpeg_on_error(j_common_ptr info) {
    lop_jpeg_errors *errors = (lop_jpeg_errors *)info->err;
    char text[JMSG_LENGTH_MAX];
    (*info->err->format_message)(info, text);
    snprintf(errors->message, LOP_JPEG_MESSAGE, "%s", text);
    longjmp(errors->jump, 1);
}

/* A warning (corrupt data, a premature end) makes the decoded pixels partly invented: Pillow refuses such files,
   and so does lop. Trace messages (level > 0) are ignored. */
static void lop_jpeg_on_message(j_common_ptr info, int level) {
    if (level < 0) lop_jpeg_on_error(info);
}

/* Decodes a JPEG held in memory to 8-bit RGB with libjpeg's defaults (accurate integer IDCT, fancy upsampling),
   as Pillow does; grey is replicated. Returns 0 and a malloc'd buffer of width·height·3 bytes; 1 with `message` set
   when the file is bad; 2 when it has more than `max_pixels` pixels (checked from the header, before decoding). */
static int lop_jpeg_decode(const unsigned char *data, size_t size, unsigned long long max_pixels,
                           unsigned char **pixels, unsigned *width, unsigned *height, int *channels, char *message) {
    struct jpeg_decompress_struct info;
    lop_jpeg_errors errors;
    unsigned char *volatile out = NULL;
    volatile int status = 1;
    message[0] = 0;
    *pixels = NULL;
    info.err = jpeg_std_error(&errors.manager);
    errors.manager.error_exit = lop_jpeg_on_error;
    errors.manager.emit_message = lop_jpeg_on_message;
    errors.message = message;
    if (setjmp(errors.jump)) {
        jpeg_destroy_decompress(&info);
        free(out);
        return status;
    }
    jpeg_create_decompress(&info);
    if (size == 0) { snprintf(message, LOP_JPEG_MESSAGE, "the file is empty"); longjmp(errors.jump, 1); }
    jpeg_mem_src(&info, data, (unsigned long)size);
    jpeg_read_header(&info, TRUE);
    *width = info.image_width;
    *height = info.image_height;
    if ((unsigned long long)info.image_width * info.image_height > max_pixels) {
        snprintf(message, LOP_JPEG_MESSAGE, "%u x %u pixels exceed the limit of %llu", info.image_width, info.image_height, max_pixels);
        status = 2;
        longjmp(errors.jump, 1);
    }
    info.out_color_space = JCS_RGB;
    *channels = 3;
    jpeg_start_decompress(&info);
    if (info.output_components != 3) { snprintf(message, LOP_JPEG_MESSAGE, "decoded to %d channels, not RGB", info.output_components); longjmp(errors.jump, 1); }
    size_t stride = (size_t)info.output_width * 3;
    out = (unsigned char *)malloc(stride * info.output_height);
    if (!out) { snprintf(message, LOP_JPEG_MESSAGE, "out of memory"); longjmp(errors.jump, 1); }
    while (info.output_scanline < info.output_height) {
        JSAMPROW row = out + stride * info.output_scanline;
        jpeg_read_scanlines(&info, &row, 1);
    }
    jpeg_finish_decompress(&info);
    jpeg_destroy_decompress(&info);
    *pixels = out;
    return 0;
}

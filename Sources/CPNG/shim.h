#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libpng reports errors by longjmp, which must never cross Swift frames: these wrappers set the jump point in C,
   turn every error into a message and a non-zero return, and free what they allocated. */

#define LOP_PNG_MESSAGE 256

typedef struct { const unsigned char *data; size_t size; size_t offset; char *message; } lop_png_source;

static void lop_png_read_bytes(png_structp png, png_bytep out, png_size_t count) {
    lop_png_source *source = (lop_png_source *)png_get_io_ptr(png);
    if (count > source->size - source->offset) png_error(png, "the file ends early");
    memcpy(out, source->data + source->offset, count);
    source->offset += count;
}

static void lop_png_on_error(png_structp png, png_const_charp text) {
    char *message = (char *)png_get_error_ptr(png);
    snprintf(message, LOP_PNG_MESSAGE, "%s", text);
    png_longjmp(png, 1);
}

static void lop_png_on_warning(png_structp png, png_const_charp text) { (void)png; (void)text; }

/* Decodes a PNG held in memory to 8-bit RGB, or RGBA when the file has alpha or a tRNS chunk, as Pillow reads it:
   palette expanded, grey replicated, 16-bit samples cut to their high byte, no gamma applied. Returns 0 and a
   malloc'd buffer of width·height·channels bytes; 1 with `message` set when the file is bad; 2 when it has more
   than `max_pixels` pixels (checked from the header, before any pixel is decoded). */
static int lop_png_decode(const unsigned char *data, size_t size, unsigned long long max_pixels,
                          unsigned char **pixels, unsigned *width, unsigned *height, int *channels, char *message) {
    png_structp png;
    png_infop info;
    unsigned char *volatile out = NULL;
    png_bytep *volatile rows = NULL;
    volatile int status = 1;
    lop_png_source source = {data, size, 0, message};
    message[0] = 0;
    *pixels = NULL;
    if (size < 8 || png_sig_cmp((png_const_bytep)data, 0, 8) != 0) {
        snprintf(message, LOP_PNG_MESSAGE, "not a PNG file (bad signature)");
        return 1;
    }
    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, message, lop_png_on_error, lop_png_on_warning);
    if (!png) { snprintf(message, LOP_PNG_MESSAGE, "libpng could not start"); return 1; }
    info = png_create_info_struct(png);
    if (!info) { png_destroy_read_struct(&png, NULL, NULL); snprintf(message, LOP_PNG_MESSAGE, "libpng could not start"); return 1; }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(out);
        free(rows);
        return status;
    }
    png_set_read_fn(png, &source, lop_png_read_bytes);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    *width = w;
    *height = h;
    if ((unsigned long long)w * h > max_pixels) {
        snprintf(message, LOP_PNG_MESSAGE, "%u x %u pixels exceed the limit of %llu", w, h, max_pixels);
        status = 2;
        png_longjmp(png, 1);
    }
    int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (depth == 16) png_set_strip_16(png);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    int alpha = (color & PNG_COLOR_MASK_ALPHA) != 0;
    if (png_get_valid(png, info, PNG_INFO_tRNS)) { png_set_tRNS_to_alpha(png); alpha = 1; }
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int c = alpha ? 4 : 3;
    *channels = c;
    if (png_get_rowbytes(png, info) != (size_t)w * c) png_error(png, "unexpected row layout after conversion to RGB");
    out = (unsigned char *)malloc((size_t)w * h * c);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * (h ? h : 1));
    if (!out || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = out + (size_t)y * w * c;
    png_read_image(png, rows);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    *pixels = out;
    return 0;
}

/* Encodes 8-bit RGB (3 channels) or grey (1) as PNG in memory through libpng's simplified API, which catches its
   own errors. Returns 0 and a malloc'd buffer, or 1 with `message` set. */
static int lop_png_encode(const unsigned char *pixels, unsigned width, unsigned height, int channels,
                          unsigned char **png_data, size_t *png_size, char *message) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = width;
    image.height = height;
    image.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
    png_alloc_size_t size = 0;
    *png_data = NULL;
    if (!png_image_write_to_memory(&image, NULL, &size, 0, pixels, 0, NULL)) {
        snprintf(message, LOP_PNG_MESSAGE, "%s", image.message);
        return 1;
    }
    unsigned char *out = (unsigned char *)malloc(size);
    if (!out) { snprintf(message, LOP_PNG_MESSAGE, "out of memory"); return 1; }
    if (!png_image_write_to_memory(&image, out, &size, 0, pixels, 0, NULL)) {
        snprintf(message, LOP_PNG_MESSAGE, "%s", image.message);
        free(out);
        return 1;
    }
    *png_data = out;
    *png_size = size;
    return 0;
}

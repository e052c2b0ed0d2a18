#include <stdio.h>
#include "greet.h"

void greet(const char *who) { printf("Hello, %s, from a program Ferry built!\n", who); }

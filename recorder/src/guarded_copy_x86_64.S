/* probing_guarded_copy for x86-64 (guarded_copy.h). Every load of the source is an instruction
 * between probing_guarded_copy and probing_guarded_copy_fixup; a fault on one of them is
 * resumed at probing_guarded_copy_fixup by the fault guard, which returns -1. Loads of 16 and
 * 8 bytes, then single bytes; each reads memory once, in order (x86 does not reorder loads). */
    .text
    .p2align 4
    .globl probing_guarded_copy
    .hidden probing_guarded_copy
    .type probing_guarded_copy, @function
probing_guarded_copy:
    mov %rdx, %rcx
    shr $4, %rcx
    jz 2f
1:  mov (%rsi), %rax
    mov 8(%rsi), %r8
    mov %rax, (%rdi)
    mov %r8, 8(%rdi)
    add $16, %rsi
    add $16, %rdi
    dec %rcx
    jnz 1b
2:  test $8, %dl
    jz 3f
    mov (%rsi), %rax
    mov %rax, (%rdi)
    add $8, %rsi
    add $8, %rdi
3:  and $7, %edx
    jz 5f
4:  movzbl (%rsi), %eax
    movb %al, (%rdi)
    inc %rsi
    inc %rdi
    dec %edx
    jnz 4b
5:  xor %eax, %eax
    ret
    .globl probing_guarded_copy_fixup
    .hidden probing_guarded_copy_fixup
probing_guarded_copy_fixup:
    mov $-1, %eax
    ret
    .size probing_guarded_copy, .-probing_guarded_copy

    .section .note.GNU-stack,"",@progbits

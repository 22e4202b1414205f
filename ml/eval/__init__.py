"""Evaluation helpers shared by methods: language-model perplexity and zero-shot choice tasks."""
from ml.eval.lm import ChoiceItem, choice_accuracy, held_out_perplexity, next_word_choice_task

__all__ = ["ChoiceItem", "choice_accuracy", "held_out_perplexity", "next_word_choice_task"]

"""Print one prompt of every registered task (CPU, a few seconds): python -m shapedce.tasks"""

from . import TASKS

for task in list(TASKS.values()):
    split = "test" if task.name == "humaneval" else "train"
    p = task.prompts(split, 1)[0]
    print(f"== {task.name}: {task.description}\n{p.text}[answer: {p.answer[:200]}]\n")

"""CoQA as pause-lm flattens it (tasks/paper.py, coqa_flatten): one example per question, the
story and the earlier turns as context."""


def coqa_turns(dataset):
  def flatten(batch):
    rows = {'inputs': [], 'target': []}
    for story, questions, answers in zip(batch['story'], batch['questions'], batch['answers']):
      texts = answers['input_text']
      turns = [f'Q: {q} A: {a}' for q, a in zip(questions, texts)]
      for i in range(min(len(questions), len(texts))):
        rows['inputs'].append(f'{story} {" ".join(turns[:i])} Q: {questions[i]} A:')
        rows['target'].append(texts[i])
    return rows

  return dataset.map(flatten, batched=True, remove_columns=dataset.column_names)

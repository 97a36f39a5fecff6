"""lacy: which tokens a small language model should learn, and which it should delegate.

A re-creation of "LaCy: What Small Language Models Can and Should Learn is Not Just a Question of
Loss" (arXiv 2602.12005). See the book (``make book``) and README for the tour.
"""

__version__ = "0.1.0"

CALL_TOKEN = "<CALL>"
PAD_TOKEN = "<pad>"
BOS_TOKEN = "<bos>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, CALL_TOKEN)
